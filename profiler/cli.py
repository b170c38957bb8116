"""``coserve profile``: measure a CoE's costs through the real Triton and write a cost profile.

Thin: parses, calls ``profiler.run``, prints. Imports stay cheap at module level.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from orchestrator.cli_paths import output_file


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile",
        help="measure load, unload, batch latency and memory of a CoE's experts on the real Triton",
        description=(
            "For each architecture of the CoE and each instance kind, measure through the embedded (or an "
            "external) Triton: cold and warm loads, 1/2/4 loads at once, unload until the memory is back, a "
            "batch sweep (K, B, R^2, max batch) and the real memory footprint; write the cost-profile YAML "
            "that `coserve simulate --profile` and the engine read."
        ),
    )
    p.add_argument("--coe", required=True, help="CoE definition file")
    p.add_argument("--repo", required=True, help="model repository the CoE is exported in")
    p.add_argument("--out", type=output_file, required=True, help="cost profile YAML to write")
    p.add_argument("--kind", action="append", choices=["cpu", "gpu"], default=None,
                   help="instance kind to profile (repeat; default: cpu)")
    p.add_argument("--triton-url", default=None, help="profile a running Triton at HOST:PORT instead of the embedded one")
    p.add_argument("--quick", action="store_true", help="2 repetitions per figure and a short sweep (under a minute)")
    p.add_argument("--explain", action="store_true", help="also split one load and one unload into their parts")
    p.set_defaults(func=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from orchestrator.coe import load_coe
    from orchestrator.errors import CoserveError
    from orchestrator.triton.adapter import check_grpc_url
    from profiler.measure import Plan
    from profiler.memory import require_gpu
    from profiler.run import experts_by_arch, run_profile, write_profile

    if args.triton_url is not None:
        check_grpc_url(args.triton_url)
    repo = Path(args.repo)
    if not repo.is_dir():
        raise CoserveError(f"--repo {repo}: not a directory (export the CoE first: coserve export --coe ... --out {repo})")
    kinds = tuple(dict.fromkeys(args.kind or ["cpu"]))
    # before anything else is read or started; only for an embedded server (run_profile says why)
    gpu = require_gpu(None) if "gpu" in kinds and args.triton_url is None else None
    coe = load_coe(args.coe)
    plan = Plan.quick() if args.quick else Plan()
    total = plan.steps() * len(experts_by_arch(coe, repo)) * len(kinds)
    command = "coserve " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "coserve profile"
    with tqdm(total=total, desc="profiling", unit="step", file=sys.stderr, leave=False, disable=None) as bar:

        def tick(what: str) -> None:
            bar.set_postfix_str(what)
            bar.update(1)

        result = run_profile(
            coe, repo, kinds, plan, triton_url=args.triton_url, explain=args.explain, gpu=gpu, command=command,
            tick=tick,
        )
    path = write_profile(result, args.out)
    print(f"wrote {path} in {result.seconds:.0f} s")
    print(f"box: {result.profile.storage_concurrent_loads} loads at once across servers (storage channels)"
          + (f", {result.profile.host_cpu_cores} cores shared by loads and CPU batches"
             if result.profile.host_cpu_cores else ""))
    for kind, spec in result.profile.processors.items():
        print(f"{kind}: unload until memory back {spec.unload_time_s * 1e3:.0f} ms ({spec.unload_mode}), "
              f"{spec.concurrent_loads} loads at once on one server"
              + (f", idle server {spec.server_idle_bytes / 2**20:.0f} MiB" if spec.server_idle_bytes else "")
              + (f" (+{spec.server_growth_bytes / 2**20:.1f} MiB while serving)" if spec.server_growth_bytes else "")
              + (f", {spec.shared_bytes / 2**20:.1f} MiB its model processes share (once per executor)"
                 if spec.shared_bytes else ""))
    for arch, per in result.profile.architectures.items():
        for kind, c in per.items():
            print(f"  {arch}/{kind} ({c.measured_expert}, {(c.file_bytes or 0) / 1e6:.1f} MB file): "
                  f"K {c.k_s * 1e3:.2f} ms B {c.b_s * 1e3:.2f} ms (R^2 {c.r2}), max batch {c.max_batch}, "
                  f"load {c.load_time_s['disk'] * 1e3:.0f} ms"
                  + (f" while computing ({c.load_time_idle_s * 1e3:.0f} ms idle)" if c.load_time_idle_s else " warm")
                  + f" / {(c.load_time_cold_s or 0) * 1e3:.0f} ms cold"
                  + (f" ({c.load_cpu_s:.2f} CPU s" + (f" + watch {c.load_watch_cores:.2f} cores" if c.load_watch_cores is not None else "") + ")"
                     if c.load_cpu_s is not None else "")
                  + (f", first batch +{c.first_batch_extra_s * 1e3:.0f} ms" if c.first_batch_extra_s is not None else "")
                  + ", "
                  f"adds {(c.weight_bytes or 0) / 2**20:.1f} MiB (+{c.activation_bytes_per_item / 2**20:.2f} MiB/item)")
    if result.explain is not None:
        print("where one load and one unload go:")
        for part, seconds in result.explain.parts.items():
            print(f"  {part:<45} {'?' if seconds is None else f'{seconds * 1e3:8.1f} ms'}")
        for note in result.explain.notes:
            print(f"  ({note})")
    return 0
