"""``coserve plan``: choose executor counts and memory splits from a cost profile (thin CLI).

The library is ``orchestrator.plan`` (pure); this module reads the inputs, shows a progress bar
and writes the serve config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from orchestrator.cli_numbers import fraction, positive_int, positive_number
from orchestrator.cli_paths import output_file
from orchestrator.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "plan",
        help="choose how many executors of each kind to run and how to split their memory",
        description=(
            "From a measured cost profile and a CoE (--profile FILE --coe FILE), or a simulator preset "
            "and a paper task (--profile paper-numa --task A1), choose the executors and their budgets "
            "for the memory given (--cpu-bytes, --gpu-bytes per device: the raw bytes coserve may use; "
            "the plan subtracts the servers' and executors' own overheads measured in the profile). "
            "Methods: paper (the CoServe paper's allocation), simulated (a simulator-driven search), "
            "best (both; the better one is written). Writes a serve config that coserve serve, bench "
            "and simulate --config accept."
        ),
    )
    p.add_argument("--profile", required=True, help="cost profile YAML, or a preset name (paper-numa, paper-uma)")
    p.add_argument("--coe", default=None, help="CoE definition (with a measured profile)")
    p.add_argument("--task", choices=["A1", "A2", "B1", "B2"], default=None, help="paper task (with a preset)")
    p.add_argument("--repo", default=None, help="model repository for coserve serve (default: the profile's directory)")
    p.add_argument("--cpu-bytes", type=positive_number, required=True, help="host memory coserve may use, bytes")
    p.add_argument("--gpu-bytes", type=positive_number, action="append", default=None,
                   help="memory of one GPU device coserve may use, bytes (repeat per device)")
    p.add_argument("--gpu-context-bytes", type=positive_number, default=None,
                   help="one CUDA context per GPU executor of this size (the native ONNX Runtime backend); "
                   "default: the preset's, or per expert inside the profile's footprints")
    p.add_argument("--policy", default=None, help="policy to plan for (default coserve+, else coserve)")
    p.add_argument("--method", choices=["paper", "simulated", "best"], default="best")
    p.add_argument("--max-gpu-executors", type=positive_int, default=6, help="GPU executors per device to try (default 6)")
    p.add_argument("--max-cpu-executors", type=positive_int, default=2, help="CPU executors to try (default 2)")
    p.add_argument("--seeds", type=positive_int, default=4, help="workload seeds each layout is simulated on (default 4)")
    p.add_argument("--max-runs", type=positive_int, default=240, help="budget of simulated runs (default 240)")
    p.add_argument("--tolerance", type=fraction, default=0.01,
                   help="fewer executors win within this share of the best prediction (default 0.01)")
    p.add_argument("--requests", type=positive_int, default=600, help="with --coe: requests per simulated task")
    p.add_argument("--out", type=output_file, required=True, help="serve config YAML to write")
    p.add_argument("--json", dest="json_out", type=output_file, default=None, help="also write what was searched as JSON here")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from orchestrator.coe import load_coe
    from orchestrator.config_reader import read_yaml_file
    from orchestrator.core.profile import parse_profile
    from orchestrator.plan.evaluate import Evaluator
    from orchestrator.plan.inputs import coe_evaluator, preset_evaluator
    from orchestrator.plan.memory import Machine
    from orchestrator.plan.result import make_plan, serve_config_text
    from orchestrator.simulate.presets import load_preset, preset_names

    machine = Machine(int(args.cpu_bytes), tuple(int(b) for b in args.gpu_bytes or ()))
    out = Path(args.out)
    bar = tqdm(total=args.max_runs, unit="run", desc="plan", file=sys.stderr, disable=None)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    shell: dict[str, str] = {}
    ev: Evaluator
    is_preset = args.profile in preset_names()
    try:
        if is_preset:
            if args.coe is not None or args.task is None:
                raise ConfigError("--profile", args.profile, "a preset needs --task (A1, A2, B1, B2) and no --coe")
            preset = load_preset(args.profile)
            if args.gpu_context_bytes is not None:
                from dataclasses import replace

                preset = replace(preset, gpu_context_bytes=int(args.gpu_context_bytes))
            ev = preset_evaluator(preset, args.task, machine, policy=args.policy, seeds=args.seeds,
                                  max_runs=args.max_runs, progress=progress, source=args.profile)
        else:
            if args.coe is None or args.task is not None:
                raise ConfigError("--profile", args.profile, "a profile file needs --coe (and no --task)")
            profile_path = Path(args.profile)
            if not profile_path.is_file():
                raise ConfigError("--profile", args.profile, f"no such file, and not a preset ({', '.join(preset_names())})")
            if args.repo is not None and not Path(args.repo).is_dir():
                raise ConfigError("--repo", args.repo, "not a model repository directory (the one coserve serve will use)")
            profile = parse_profile(read_yaml_file(profile_path), str(profile_path))
            coe = load_coe(args.coe)
            ev = coe_evaluator(coe, profile, machine, policy=args.policy, seeds=args.seeds, max_runs=args.max_runs,
                               requests=args.requests, progress=progress, source=str(profile_path),
                               gpu_context_bytes=None if args.gpu_context_bytes is None else int(args.gpu_context_bytes))
            repo = Path(args.repo) if args.repo else profile_path.parent
            base = out.resolve().parent
            shell = {
                "coe": os.path.relpath(Path(args.coe).resolve(), base),
                "repo": os.path.relpath(repo.resolve(), base),
                "profile": os.path.relpath(profile_path.resolve(), base),
            }
        try:
            plan = make_plan(ev, args.method, max_gpu_per_device=args.max_gpu_executors,
                             max_cpu=args.max_cpu_executors, tolerance=args.tolerance)
        except ValueError as exc:
            raise ConfigError("--cpu-bytes", str(int(args.cpu_bytes)), str(exc)) from None
    finally:
        bar.close()
    command = "coserve plan " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["plan"] else "coserve plan"
    text = serve_config_text(plan, shell, command)
    written = out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        if args.json_out:
            written = Path(args.json_out)
            written.parent.mkdir(parents=True, exist_ok=True)
            written.write_text(json.dumps(plan.to_json_obj(), indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(str(written), "", f"cannot write ({exc.strerror or exc})") from None
    for name, m in plan.methods.items():
        c = m.chosen
        print(f"{name:<10} {c.label if c else 'nothing fits':<28} {c.score if c else 0:8.2f} img/s predicted"
              + ("  (budget spent)" if m.budget_spent else ""))
    ru = plan.runner_up
    print(f"chosen: {plan.chosen.label} ({plan.chosen_method}): {plan.reason}")
    if ru is not None:
        print(f"runner-up: {ru.label} at {ru.score:.2f} img/s")
    print(f"{plan.runs} simulated runs of {plan.max_runs}; wrote {out}")
    return 0
