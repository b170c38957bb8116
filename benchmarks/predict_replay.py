"""Re-predict a recorded ``serve_bench`` run on another cost profile, without serving again.

``serve_bench.py`` writes each policy's real throughput; its request sequences are deterministic
(``orchestrator.bench.bench_workload``) and where the detector step ran follows from the verdicts,
which are identical to ONNX Runtime's on the same images (a serve_bench check), so the simulator's
input for every run can be rebuilt exactly: on the profile the run used, this script reproduces the
run's recorded predictions. On another profile, or with fields set by ``--set`` (a what-if, never a
measurement: say so wherever its figures go), it shows what that profile predicts for the same
runs, beside the fixed-time model (``serve_bench.fixed_times``).

Run:  .venv/bin/python benchmarks/predict_replay.py --profile bench-results/serve_bench/repo/profile.yaml \\
          [--set classifier.load_cpu_s=0.225 --set host.cpu_cores=2 ...]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from serve_bench import fixed_times, reference_outcomes  # benchmarks/ is sys.path[0] as a script

from orchestrator.bench import (
    bench_workload,
    budget_serve_file,
    expert_footprint_bytes,
    predict,
    sim_workload,
)
from orchestrator.board_source import BoardRequest
from orchestrator.coe import CoEDefinition, load_coe
from orchestrator.core.profile import CostProfile, load_profile_text
from orchestrator.simulate.bounds import compute_bounds

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("load_cpu_s", "load_watch_cores", "first_batch_extra_s", "load_time_idle_s")


def with_settings(profile: CostProfile, settings: list[str]) -> CostProfile:
    """``profile`` with ``arch.field=value`` (every kind of ``arch``; ``*`` for every arch) and
    ``host.cpu_cores=N`` applied."""
    for item in settings:
        key, _, value = item.partition("=")
        scope, _, name = key.partition(".")
        if scope == "host" and name == "cpu_cores":
            profile = replace(profile, host_cpu_cores=int(value))
            continue
        if name == "unload_cpu_s" and scope in profile.processors:
            procs = dict(profile.processors)
            procs[scope] = replace(procs[scope], unload_cpu_s=float(value))
            profile = replace(profile, processors=procs)
            continue
        if name not in FIELDS:
            raise SystemExit(f"--set {item}: field must be one of {', '.join(FIELDS)}, host.cpu_cores or "
                             "<kind>.unload_cpu_s")
        changes: dict[str, Any] = {name: float(value)}
        archs = {
            a: {k: replace(c, **changes) for k, c in per.items()} if scope in (a, "*") else dict(per)
            for a, per in profile.architectures.items()
        }
        profile = replace(profile, architectures=archs)
    return profile


def detector_ran(coe: CoEDefinition, requests: tuple[BoardRequest, ...], verdicts: dict[str, str]) -> list[bool]:
    """Whether each request's detector step ran: its classifier found no defect and it has one."""
    return [verdicts[str(r.request_id)] in ("pass", "fail") and coe.routing[r.component_type].detector is not None
            for r in requests]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="bench-results/serve_bench", help="serve_bench's board (coe.yaml, repo/)")
    ap.add_argument("--real", default="benchmarks/results/serve_bench.json", help="the run's flat JSON")
    ap.add_argument("--details", default=None, help="its .details.json (default: beside --real)")
    ap.add_argument("--profile", required=True, help="the profile to predict on")
    ap.add_argument("--set", action="append", default=[],
                    help="arch.field=value, cpu.unload_cpu_s=S or host.cpu_cores=N (what-if)")
    args = ap.parse_args(argv)
    work = ROOT / args.work
    coe = load_coe(work / "coe.yaml")
    profile = with_settings(load_profile_text(Path(args.profile).read_text(), args.profile), args.set)
    real_path = ROOT / args.real
    real = json.loads(real_path.read_text())
    details = json.loads(Path(args.details or real_path.with_name(real_path.stem + ".details.json")).read_text())
    wl = bench_workload(coe, details["requests"], details["interval_ms"] / 1000.0, details["warmup"])
    task_ran = detector_ran(coe, wl.measured, reference_outcomes(coe, work / "repo", wl.measured))
    warm_ran = detector_ran(coe, wl.warmup, reference_outcomes(coe, work / "repo", wl.warmup))
    # the run's budgets (from its details) and what the engine took off each for the server's growth
    recorded = load_profile_text(Path(details["profile"]).read_text(), details["profile"]) \
        if Path(details["profile"]).is_file() else profile
    budget = details.get("budget_bytes") or int(expert_footprint_bytes(coe, recorded) / 4)
    spec = budget_serve_file(work / "coe.yaml", work / "repo", budget)
    growth = recorded.processor("cpu").executor_reserve_bytes()
    out: dict[str, Any] = {}
    print(f"{'run':<15} {'real':>7} {'fixed times':>11} {'diff':>6} {'this profile':>12} {'diff':>6}")
    for name, row in real.items():
        if name in ("compulsory", "all-resident") or row.get("predicted_throughput_img_s") is None:
            continue
        cfg = replace(spec.config, policy=name)
        cfg = replace(cfg, executors=tuple(replace(e, budget_bytes=e.budget_bytes - growth) for e in cfg.executors))
        task = sim_workload(coe, profile, wl.measured, task_ran, wl.interval_s, name)
        warm = sim_workload(coe, profile, wl.warmup, warm_ran, wl.interval_s, f"{name}-warmup")
        fixed = predict(task, warm, cfg, fixed_times(profile), name).throughput_img_s
        now = predict(task, warm, cfg, profile, name).throughput_img_s
        r = row["throughput_img_s"]
        out[name] = {"real": r, "fixed_times": round(fixed, 3), "this_profile": round(now, 3)}
        print(f"{name:<15} {r:7.2f} {fixed:11.2f} {(fixed - r) / r:+6.0%} {now:12.2f} {(now - r) / r:+6.0%}")
    # the compulsory bound of the recorded task, by the bounds code as it is now (serve_bench's
    # own figure is the code's of the day it ran)
    first = next(n for n in real if n not in ("compulsory", "all-resident"))
    cfg = replace(spec.config, policy=first)
    cfg = replace(cfg, executors=tuple(replace(e, budget_bytes=e.budget_bytes - growth) for e in cfg.executors))
    task = sim_workload(coe, profile, wl.measured, task_ran, wl.interval_s, "bench")
    bound = compute_bounds(task, cfg, profile).row("compulsory", len(task.requests)).throughput_img_s
    recorded_bound = real.get("compulsory", {}).get("throughput_img_s")
    print(f"compulsory bound on this profile: {bound:.2f} img/s (the run recorded {recorded_bound})")
    print(json.dumps({"profile": args.profile, "set": args.set, "runs": out, "compulsory_img_s": round(bound, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
