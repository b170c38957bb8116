"""``coserve bench``: every policy on the real embedded Triton, beside the simulator (thin CLI).

The library is ``orchestrator.bench`` (what is run and how each figure is defined).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli_numbers import nonneg_number, positive_int
from orchestrator.cli_paths import output_file


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "bench",
        help="run each policy on the real Triton through the gRPC API, beside the simulator's prediction",
        description=(
            "For each policy (default: all paper policies) start the service in-process (one embedded "
            "tritonserver per executor), stream an untimed warm-up of 200 requests, then the measured "
            "board task through InspectBoard, and report throughput, switches, p50/p99 latency and peak "
            "measured memory beside what the simulator predicts on the same profile, workload and "
            "config; also the all-resident case (run for real) and the compulsory bound."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", default=None, help="serve config YAML (docs/serving.md)")
    src.add_argument("--coe", default=None, help="CoE definition (with --repo and --budget-bytes)")
    p.add_argument("--repo", default=None, help="model repository (with --coe)")
    p.add_argument(
        "--budget-bytes", type=positive_int, default=None,
        help="with --coe: two CPU executors splitting this many bytes (one per core)",
    )
    p.add_argument(
        "--profile", default=None,
        help="cost profile YAML (default: <repo>/profile.yaml if it is current and was measured with the full "
        "plan, else a full profile is measured there, about a minute on a 100-type board)",
    )
    p.add_argument(
        "--quick-profile", action="store_true",
        help="measure (or reuse) a quick profile instead: ~10 s, but its two loads per figure can fall in "
        "a slow spell of a shared box and skew the predictions (docs/profiler.md)",
    )
    p.add_argument("--policy", action="append", default=None, help="policy to run (repeat; default: all)")
    p.add_argument("--requests", type=positive_int, default=600, help="requests in the measured task (default 600)")
    p.add_argument(
        "--interval-ms", type=nonneg_number, default=4.0, help="time between requests, ms (default 4; 0: all at once)"
    )
    p.add_argument("--json", dest="json_out", type=output_file, default=None, help="write the flat result object as JSON here")
    p.add_argument("--plot", type=output_file, default=None, help="draw throughput and switches per policy as a PNG here")
    p.add_argument("--cold-start", action="store_true", help="skip the untimed warm-up of 200 requests")
    p.set_defaults(func=handler, _parser=p)


def handler(args: argparse.Namespace) -> int:
    from orchestrator.bench import budget_serve_file, format_table, plot, run_bench, write_json
    from orchestrator.errors import ConfigError
    from orchestrator.serve_file import load_serve_file

    if args.config is not None:
        for flag, value in (("--repo", args.repo), ("--budget-bytes", args.budget_bytes)):
            if value is not None:
                raise ConfigError(flag, str(value), "give either --config or --coe/--repo/--budget-bytes, not both")
        spec = load_serve_file(args.config)
    else:
        if args.repo is None or args.budget_bytes is None:
            raise ConfigError("--coe", args.coe, "needs --repo DIR and --budget-bytes N too")
        # named by its flag here: the spec built from the flags reports its errors as "--budget-bytes"
        if not Path(args.repo).is_dir():
            raise ConfigError("--repo", args.repo, "not a model repository directory")
        spec = budget_serve_file(args.coe, args.repo, args.budget_bytes)
    from profiler.measure import Plan

    result = run_bench(
        spec,
        policies=args.policy,
        profile=args.profile,
        profile_plan=Plan.quick() if args.quick_profile else Plan(),
        requests=args.requests,
        interval_s=args.interval_ms / 1000.0,
        cold_start=args.cold_start,
        say=lambda line: print(line, flush=True),
    )
    print(format_table(result))
    share = result.sampler_cpu_share()
    print(f"memory sampler: at most {share:.2%} of one core")
    if args.json_out:
        write_json(result, args.json_out)
    if args.plot:
        try:
            plot(result, args.plot)
        except OSError as exc:
            raise ConfigError(args.plot, "", f"cannot write the plot ({exc.strerror or exc})") from None
    return 1 if any(r.errors for r in result.runs.values()) else 0
