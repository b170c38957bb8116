"""``coserve simulate``: replay paper tasks, custom boards or a CoE file on simulated hardware."""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path

from orchestrator.cli_numbers import fraction, nonneg_int, nonneg_number, positive_int, positive_number
from orchestrator.cli_paths import output_file
from orchestrator.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "simulate",
        help="replay a workload with the CoServe core on simulated hardware",
        description=(
            "Replay a paper task (--task), a custom synthetic board (--types ... flags) or a CoE file "
            "(--coe) with each policy and print throughput, switches, loads by tier, busy shares, "
            "latency percentiles and the all-resident and compulsory bounds. Every policy starts "
            "from the same state: after --warmup-tasks prior tasks (default 1), or empty (--cold-start)."
        ),
    )
    src = p.add_argument_group("hardware")
    src.add_argument(
        "--preset", default=None, help="hardware preset: paper-numa (default) or paper-uma, or a file"
    )
    src.add_argument("--profile", default=None, help="cost profile YAML (measured costs) instead of a preset")
    src.add_argument("--config", default=None, help="serve config YAML (executors, policy, features)")
    wl = p.add_argument_group("workload")
    wl.add_argument("--task", choices=["A1", "A2", "B1", "B2"], default=None, help="a paper task")
    wl.add_argument("--coe", default=None, help="a CoE definition file (requests drawn from its board mix)")
    wl.add_argument("--types", type=positive_int, default=None, help="component types (experts) on the board")
    wl.add_argument("--requests", type=positive_int, default=None, help="requests in the task (>= 1)")
    wl.add_argument(
        "--interval-ms", type=nonneg_number, default=None, help="time between arrivals (ms; 0: all at once)"
    )
    wl.add_argument(
        "--zipf",
        type=nonneg_number,
        default=None,
        help="pure Zipf mix with this exponent (0: uniform; default: calibrated)",
    )
    wl.add_argument("--detectors", type=nonneg_int, default=None, help="shared detector experts (0: none)")
    wl.add_argument(
        "--detector-share", type=fraction, default=None, help="share of types handed to a detector, in [0, 1]"
    )
    wl.add_argument("--seed", type=nonneg_int, default=None, help="workload seed (>= 0)")
    start = p.add_argument_group("start (the same for every policy)")
    start.add_argument(
        "--warmup-tasks",
        type=nonneg_int,
        default=None,
        help="prior tasks from the same mix (other seeds) run before the measured one, from an "
        "empty box; only the measured task counts (default 1: a steady state)",
    )
    start.add_argument(
        "--cold-start",
        action="store_true",
        help="start every policy empty; coserve's placement loads are timed like any other load",
    )
    pol = p.add_argument_group("policies")
    pol.add_argument(
        "--policy", action="append", default=None, help="policy to replay (repeat; default: all)"
    )
    pol.add_argument(
        "--starvation-bound-s",
        type=positive_number,
        default=None,
        help="feature: serve a step older than this (seconds, > 0) next",
    )
    pol.add_argument("--prefetch", action="store_true", help="feature: prefetch likely subsequent experts")
    for flag, help_text in (
        ("--queue-aware-eviction", "never evict what queued steps need while another victim exists"),
        ("--lookahead-loading", "load the next queued groups' experts while the executor works"),
        ("--serve-resident", "run a group whose expert is ready while the head's loads"),
        ("--unload-headroom", "evict ahead so that a load never waits for a slow unload"),
    ):
        pol.add_argument(flag, action="store_true", help=f"feature: {help_text}")
    pol.add_argument("--online-probabilities", action="store_true", help="feature: follow the observed mix")
    pol.add_argument(
        "--cpu-cache-bytes",
        type=nonneg_number,
        default=None,
        help="feature: CPU-memory cache tier for GPU loads, in bytes (0: no cache tier)",
    )
    p.add_argument("--json", dest="json_out", type=output_file, default=None, help="write the results as JSON to this file")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from orchestrator.coe import load_coe
    from orchestrator.config_reader import read_yaml_file
    from orchestrator.core.policies import DEFAULT_POLICIES, get_policy
    from orchestrator.core.profile import CostProfile, parse_profile
    from orchestrator.core.serve_config import (
        ConfigDeprecation,
        ExecutorConfig,
        ServeConfig,
        parse_serve_config,
    )
    from orchestrator.simulate.presets import load_preset
    from orchestrator.simulate.report import format_table, run_report
    from orchestrator.simulate.workload import PAPER_TASKS, build_workload, workload_from_coe

    if args.cold_start and args.warmup_tasks:
        raise ConfigError("--cold-start", "", "give either --cold-start or --warmup-tasks N, not both")
    warmup = 0 if args.cold_start else (1 if args.warmup_tasks is None else args.warmup_tasks)
    if args.profile and args.preset:
        raise ConfigError("--profile", args.profile, "give either --preset or --profile, not both")
    policies = list(args.policy or DEFAULT_POLICIES)
    for name in policies:
        get_policy(name)

    preset = None
    profile: CostProfile
    if args.profile:
        profile = parse_profile(read_yaml_file(args.profile), args.profile)
    else:
        preset = load_preset(args.preset or "paper-numa")
        profile = preset.profile

    if args.coe:
        if args.task:
            raise ConfigError("--coe", args.coe, "give either --task or --coe, not both")
        coe = load_coe(args.coe)
        # the CoE file fixes its board's types, mix and detectors: a flag that would change them
        # is refused rather than silently ignored
        fixed = [
            flag
            for flag, value in (
                ("--types", args.types),
                ("--zipf", args.zipf),
                ("--detectors", args.detectors),
                ("--detector-share", args.detector_share),
            )
            if value is not None
        ]
        if fixed:
            raise ConfigError(
                ", ".join(fixed), "", "these shape a paper task's board; with --coe the CoE file defines it"
            )
        wl = workload_from_coe(
            coe,
            profile,
            requests=args.requests if args.requests is not None else coe.board.total,
            interval_s=(args.interval_ms if args.interval_ms is not None else 4.0) / 1000.0,
            seed=args.seed if args.seed is not None else coe.seed,
            source=args.profile or (args.preset or "paper-numa"),
        )
        board = "A"
    else:
        spec = PAPER_TASKS[args.task or "A1"]
        over: dict[str, object] = {}
        if args.types is not None:
            over["types"] = args.types
        if args.requests is not None:
            over["requests"] = args.requests
        if args.interval_ms is not None:
            over["interval_s"] = args.interval_ms / 1000.0
        if args.zipf is not None:
            over["zipf"] = args.zipf
        if args.detectors is not None:
            over["detectors"] = args.detectors
        if args.detector_share is not None:
            over["detector_share"] = args.detector_share
        if args.seed is not None:
            over["seed"] = args.seed
        if over:
            spec = replace(spec, name=f"{spec.name}-custom", **over)  # type: ignore[arg-type]
        wl = build_workload(spec, profile, args.profile or (args.preset or "paper-numa"))
        board = spec.board

    config: ServeConfig
    if args.config:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConfigDeprecation)
            config = parse_serve_config(read_yaml_file(args.config), args.config)
        for w in caught:
            print(f"coserve: warning: {w.message}", file=sys.stderr)
    elif preset is not None:
        config = preset.config(board)
    else:
        # one executor per processor kind in the profile, each with a quarter of the CoE's expert bytes
        kinds = sorted({k for per in profile.architectures.values() for k in per})
        graph = wl.graph()
        execs = []
        for i, kind in enumerate(kinds):
            total = sum(graph.bytes(e, kind) or 0 for e in graph.experts)
            execs.append(ExecutorConfig(f"{kind}{i}", kind, max(1, total // 4)))
        config = ServeConfig(executors=tuple(execs))
    sw: dict[str, object] = {}
    if args.starvation_bound_s is not None:
        sw["starvation_bound_s"] = args.starvation_bound_s
    if args.prefetch:
        sw["prefetch"] = True
    if args.online_probabilities:
        sw["online_probabilities"] = True
    for name in ("queue_aware_eviction", "lookahead_loading", "serve_resident", "unload_headroom"):
        if getattr(args, name):
            sw[name] = True
    if args.cpu_cache_bytes is not None:
        # as in a serve config: the feature needs bytes; 0 leaves only Samba-CoE's own cache tier
        sw["cpu_cache"] = args.cpu_cache_bytes >= 1
        config = replace(config, cpu_cache_bytes=int(args.cpu_cache_bytes))
    if sw:
        config = config.with_features(**sw)

    report = run_report(wl, config, profile, policies, warmup_tasks=warmup)
    print(format_table(report))
    if args.json_out:
        try:
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_out).write_text(report.to_json())
        except OSError as exc:
            raise ConfigError(args.json_out, "", f"cannot write JSON ({exc.strerror or exc})") from None
    return 0
