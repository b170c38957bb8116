"""Acceptance benchmark of serving: every policy on the real embedded Triton, beside the simulator.

What it does:
1. generates a board of ``--types`` (default 100) component types with CPU-scaled experts (the
   ``pcb-a`` preset of ``coserve coe generate`` with ``types`` replaced: 2 MB classifiers, 8 MB
   detectors, 4 shared detectors) and exports it into ``--work`` (reused when unchanged);
2. profiles it (the cached ``<repo>/profile.yaml`` if it is current and was measured with the full
   plan, else a full profile measured now, about a minute, as ``coserve bench`` does: a quick
   one's two loads per figure can fall in one of this box's slow spells);
3. sets the memory budget so that the experts' profiled footprint is ``--ratio`` (default 4) times
   the budget, split over two CPU executors (``coserve bench --budget-bytes``);
4. runs the ``coserve bench`` logic (``orchestrator.bench.run_bench``) with ``--requests`` (600)
   requests every 4 ms after the 200-request warm-up, for every paper policy and all-resident;
5. checks every verdict against the same expert chain run directly in ONNX Runtime on the same
   images;
6. writes ``benchmarks/results/serve_bench.json`` (the flat ``coserve bench --json`` object),
   ``serve_bench.png`` (``--plot``) and ``serve_bench.details.json`` (per-executor peaks and
   budgets, predicted switches, the sampler's cost, the checks), prints the table and the
   acceptance checks. Exit status 0 whether or not a check passes (it is a measurement); 1 if a
   run had verdict errors.

Run:  nohup .venv/bin/python benchmarks/serve_bench.py > bench-results/serve_bench.log 2>&1 &
Figures depend on the host and on what else runs on its cores; the details name the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from bench_board import prepare_board  # benchmarks/ is sys.path[0] when run as a script

from orchestrator import experts_io
from orchestrator.bench import (
    ALL_RESIDENT,
    BenchResult,
    BenchWorkload,
    bench_workload,
    budget_serve_file,
    expert_footprint_bytes,
    format_table,
    plot,
    predict,
    run_bench,
    sim_workload,
    write_json,
)
from orchestrator.board_source import BoardRequest
from orchestrator.coe import CoEDefinition
from orchestrator.core.policies import PAPER_POLICIES, POLICIES
from orchestrator.core.profile import CostProfile
from profiler.run import machine_description

ROOT = Path(__file__).resolve().parents[1]


def reference_outcomes(coe: CoEDefinition, repo: Path, requests: Sequence[BoardRequest]) -> dict[str, str]:
    """Component id -> the verdict of its expert chain run directly in ONNX Runtime."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions: dict[str, Any] = {}

    def run(expert: str, x: np.ndarray) -> dict[str, np.ndarray]:
        if expert not in sessions:
            sessions[expert] = ort.InferenceSession(
                str(repo / expert / "1" / "model.onnx"), opts, providers=["CPUExecutionProvider"]
            )
        s = sessions[expert]
        names = [o.name for o in s.get_outputs()]
        return dict(zip(names, s.run(None, {experts_io.INPUT_NAME: x[None]}), strict=True))

    out: dict[str, str] = {}
    for r in requests:
        assert isinstance(r.image, np.ndarray)
        rule = coe.routing[r.component_type]
        logits = run(rule.classifier, r.image)[experts_io.CLASSIFIER_OUTPUT]
        if not experts_io.classifier_no_defect(logits)[0]:
            out[str(r.request_id)] = "defect"
        elif rule.detector is None:
            out[str(r.request_id)] = "pass"
        else:
            det = run(rule.detector, r.image)
            _, h, w = coe.experts[rule.detector].input_shape
            ok = bool(experts_io.detector_pass(det["boxes"], det["objectness"], (h, w))[0])
            out[str(r.request_id)] = "pass" if ok else "fail"
    return out


def checks(result: BenchResult, reference: dict[str, str], warm_reference: dict[str, str]) -> list[dict[str, Any]]:
    """The acceptance checks, each with its figures and whether it passed."""
    runs = result.runs
    out: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        out.append({"check": name, "pass": bool(ok), "detail": detail})

    ours = [n for n in runs if n.startswith("coserve")]
    best = max(ours, key=lambda n: runs[n].throughput_img_s) if ours else None
    if best is not None:
        b = runs[best]
        for base, factor in (("samba-lru", 3.0), ("samba-parallel", 2.0)):
            if base in runs:
                ratio = b.throughput_img_s / max(runs[base].throughput_img_s, 1e-12)
                check(f"{best} >= {factor:g}x {base} throughput", ratio >= factor,
                      f"{b.throughput_img_s:.2f} vs {runs[base].throughput_img_s:.2f} img/s = {ratio:.2f}x")
        if "samba-lru" in runs:
            lru = runs["samba-lru"].switches
            fewer = 1.0 - b.switches / lru if lru else 0.0
            check(f"{best} >= 75% fewer switches than samba-lru", fewer >= 0.75,
                  f"{b.switches} vs {lru} = {fewer:.0%} fewer")
        frac = b.throughput_img_s / max(result.compulsory.throughput_img_s, 1e-12)
        check(f"{best} >= 50% of the compulsory bound", frac >= 0.5,
              f"{b.throughput_img_s:.2f} vs {result.compulsory.throughput_img_s:.2f} img/s = {frac:.0%}")
    over = {f"{n}/{ex}": pb for n, r in runs.items() for ex, pb in r.over_budget().items()}
    worst = max(
        ((f"{n}/{ex}", r.executor_peak_bytes.get(ex, 0) / b) for n, r in runs.items()
         for ex, b in r.executor_budget_bytes.items()),
        key=lambda kv: kv[1], default=("-", 0.0),
    )
    check("every executor's measured footprint within its budget", not over,
          f"highest peak/budget {worst[1]:.0%} ({worst[0]})" + (f"; over: {over}" if over else ""))
    for n, r in runs.items():
        if r.predicted is None:
            continue
        err = (r.predicted.throughput_img_s - r.throughput_img_s) / max(r.throughput_img_s, 1e-12)
        check(f"simulator within 25% of real throughput: {n}", abs(err) <= 0.25,
              f"predicted {r.predicted.throughput_img_s:.2f} vs real {r.throughput_img_s:.2f} img/s ({err:+.0%}); "
              f"switches predicted {r.predicted.switches} vs real {r.switches}")
    wrong = {n: sum(1 for c, o in r.outcomes.items() if reference.get(c) != o) for n, r in runs.items()}
    wrong_warm = {n: sum(1 for c, o in r.warmup_outcomes.items() if warm_reference.get(c) != o) for n, r in runs.items()}
    missing = {n: len(reference) - len(r.outcomes) for n, r in runs.items()}
    check("every verdict identical to ONNX Runtime on the same images",
          not any(wrong.values()) and not any(wrong_warm.values()) and not any(missing.values()),
          f"differing: measured {wrong}, warm-up {wrong_warm}; missing {missing}")
    share = result.sampler_cpu_share()
    check("memory sampler < 5% of a core", share < 0.05, f"at most {share:.2%} of one core")
    return out


def scaled_profile(profile: CostProfile, load_factor: float = 1.0, concurrent_loads: int | None = None) -> CostProfile:
    """``profile`` with every load time scaled by ``load_factor`` and, if given, one number of
    loads at once for the storage and every processor (a what-if, never a measurement)."""
    archs = {
        a: {k: replace(c, load_time_s={t: v * load_factor for t, v in c.load_time_s.items()}) for k, c in per.items()}
        for a, per in profile.architectures.items()
    }
    procs = dict(profile.processors)
    storage = profile.storage_concurrent_loads
    if concurrent_loads is not None:
        procs = {k: replace(v, concurrent_loads=concurrent_loads) for k, v in procs.items()}
        storage = concurrent_loads
    return replace(profile, architectures=archs, processors=procs, storage_concurrent_loads=storage)


def fixed_times(profile: CostProfile) -> CostProfile:
    """``profile`` without the shared-cores model and the first-batch extra (the simulator's
    model before issue 9's fix: fixed load and batch times, compute overlapping loads for free)."""
    archs = {a: {k: replace(c, load_cpu_s=None, first_batch_extra_s=None) for k, c in per.items()}
             for a, per in profile.architectures.items()}
    return replace(profile, architectures=archs, host_cpu_cores=None)


def what_if(result: BenchResult, coe: CoEDefinition, profile: CostProfile, wl: BenchWorkload) -> dict[str, Any]:
    """Why the prediction misses, per run: the simulator again with (a) the mean load time the
    engine measured while serving instead of the profile's, (b) one load at a time instead of the
    profile's ``concurrent_loads``, (c) both, (d) fixed load and batch times (``fixed_times``: the
    model without the shared cores, to show what that model changes). Real figures are not touched. Caveat: the engine's
    load time (``EngineStats.load_s``) runs from the load call, so it includes the wait for the
    backend's load channel when loads queue: (a) then overstates a load's own cost."""
    base = min(c.load_time_s["disk"] for per in profile.architectures.values() for c in per.values())
    out: dict[str, Any] = {}
    for name, r in result.runs.items():
        row: dict[str, Any] = {"real_img_s": round(r.throughput_img_s, 3),
                               "predicted_img_s": round(r.predicted.throughput_img_s, 3) if r.predicted else None}
        if r.loads_total:
            mean = r.load_s / r.loads_total
            row["mean_load_s_serving"] = round(mean, 4)
            row["profile_load_s"] = round(base, 4)
            task = sim_workload(coe, profile, wl.measured, r.detector_ran, wl.interval_s, name)
            warm = (sim_workload(coe, profile, wl.warmup, r.warmup_detector_ran, wl.interval_s, f"{name}-warmup")
                    if r.warmup_detector_ran else None)
            config = r.engine_config or (
                result.resident_config if name == ALL_RESIDENT and result.resident_config else result.config
            )
            config = replace(config, policy=r.policy)
            for label, prof in (
                ("predicted_serving_load_time", scaled_profile(profile, mean / base)),
                ("predicted_one_load_at_a_time", scaled_profile(profile, 1.0, 1)),
                ("predicted_both", scaled_profile(profile, mean / base, 1)),
                ("predicted_fixed_times", fixed_times(profile)),
            ):
                row[label] = round(predict(task, warm, config, prof, r.policy).throughput_img_s, 3)
        out[name] = row
    return out


def details(
    result: BenchResult, checked: list[dict[str, Any]], meta: dict[str, Any], analysis: dict[str, Any]
) -> dict[str, Any]:
    runs = {}
    for n, r in result.runs.items():
        s = r.sampler
        runs[n] = {
            "policy": r.policy,
            "completed": r.completed,
            "errors": r.errors,
            "error_texts": r.error_texts,
            "makespan_s": round(r.makespan_s, 3),
            "predicted_switches": r.predicted.switches if r.predicted else None,
            "predicted_p50_latency_s": round(r.predicted.p50_latency_s, 4) if r.predicted else None,
            "predicted_p99_latency_s": round(r.predicted.p99_latency_s, 4) if r.predicted else None,
            "predicted_busy_share": r.predicted.busy_share if r.predicted else None,
            "executor_budget_bytes": r.executor_budget_bytes,
            "executor_peak_bytes": r.executor_peak_bytes,
            "engine_loads_in_task": r.loads_total,
            "engine_unloads_in_task": r.unloads_total,
            "engine_load_s_in_task": round(r.load_s, 3),
            "engine_compute_s_in_task": round(r.compute_s, 3),
            "box": None if r.box is None else {"load_avg_1m": list(r.box.load_avg_1m), "steal_share": r.box.steal_share},
            "sampler": None if s is None else {
                "cpu_share_of_one_core": round(s.cpu_share, 5), "cpu_s": round(s.cpu_s, 3), "wall_s": round(s.wall_s, 2),
                "pss_reads": s.pss_reads, "statm_reads": s.statm_reads, "scans": s.scans, "poked": s.poked,
                "max_gap_s": round(s.max_gap_s, 3), "max_pss_gap_s": round(s.max_pss_gap_s, 3),
                "idle_bytes": s.idle_bytes,
            },
        }
    return {**meta, "compulsory_loads": result.compulsory.switches, "runs": runs, "checks": checked,
            "what_if": analysis}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="bench-results/serve_bench", help="where the board is generated and exported")
    ap.add_argument("--out", default="benchmarks/results/serve_bench", help="output stem (.json, .png, .details.json)")
    ap.add_argument("--types", type=int, default=100)
    ap.add_argument("--ratio", type=float, default=4.0, help="experts' profiled footprint / memory budget")
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--interval-ms", type=float, default=4.0)
    ap.add_argument("--policy", action="append", default=None, help="default: every paper policy")
    args = ap.parse_args(argv)
    began = time.perf_counter()
    say = lambda line: print(line, flush=True)  # noqa: E731

    board = prepare_board(Path(args.work), args.types, say)
    coe, coe_path, repo, profile_path, profile = board.coe, board.coe_path, board.repo, board.profile_path, board.profile
    footprint = expert_footprint_bytes(coe, profile)
    budget = int(footprint / args.ratio)
    say(f"experts' profiled footprint {footprint / 2**20:.0f} MiB -> budget {budget / 2**20:.0f} MiB "
        f"({args.ratio:g}x), two CPU executors of {budget / 2 / 2**20:.0f} MiB")
    spec = budget_serve_file(coe_path, repo, budget, profile=profile_path)
    policies = args.policy or [p for p in PAPER_POLICIES if p in POLICIES]
    extra = [p for p in sorted(POLICIES) if p.startswith("coserve") and p not in policies]
    if extra and args.policy is None:  # e.g. coserve+ once it is registered
        policies += extra
    result = run_bench(spec, policies=policies, profile=profile_path, requests=args.requests,
                       interval_s=args.interval_ms / 1000.0, say=say)

    wl = bench_workload(coe, args.requests, args.interval_ms / 1000.0, result.warmup)
    t = time.perf_counter()
    reference = reference_outcomes(coe, repo, wl.measured)
    warm_reference = reference_outcomes(coe, repo, wl.warmup)
    say(f"ONNX Runtime reference verdicts for {len(reference)} + {len(warm_reference)} images in "
        f"{time.perf_counter() - t:.0f} s")
    checked = checks(result, reference, warm_reference)

    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    # the stem may hold dots (serve_bench.second): append, never with_suffix (it would replace them)
    json_out, png_out = out.parent / f"{out.name}.json", out.parent / f"{out.name}.png"
    write_json(result, json_out)
    plot(result, png_out, title=f"coserve bench, {len(coe.routing)} types, footprint {args.ratio:g}x budget")
    meta = {
        "machine": machine_description(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "board": {"name": coe.name, "types": len(coe.routing), "experts": len(coe.experts),
                  "components_per_board": coe.board.total},
        "profile": str(profile_path), "profile_measured": dict(profile.measured),
        "expert_footprint_bytes": footprint, "budget_bytes": budget,
        "executor_budgets": {e.name: e.budget_bytes for e in spec.config.executors},
        "all_resident_budgets": {e.name: e.budget_bytes for e in result.resident_config.executors}
        if result.resident_config else None,
        "requests": result.requests, "warmup": result.warmup, "interval_ms": args.interval_ms,
        "seconds": round(time.perf_counter() - began, 1),
    }
    analysis = what_if(result, coe, profile, wl)
    (out.parent / f"{out.name}.details.json").write_text(
        json.dumps(details(result, checked, meta, analysis), indent=2) + "\n"
    )

    print()
    print(format_table(result))
    print()
    for c in checked:
        print(f"[{'PASS' if c['pass'] else 'FAIL'}] {c['check']}: {c['detail']}")
    print("\nwhy the prediction misses (the simulator again with serving costs; img/s):")
    print(f"{'run':<15} {'real':>7} {'pred':>7} {'load s':>7} {'prof s':>7} {'serving load':>12} "
          f"{'1 at a time':>11} {'both':>7} {'fixed times':>11}")
    for n, row in analysis.items():
        if "mean_load_s_serving" in row:
            print(f"{n:<15} {row['real_img_s']:7.2f} {row['predicted_img_s']:7.2f} {row['mean_load_s_serving']:7.3f} "
                  f"{row['profile_load_s']:7.3f} {row['predicted_serving_load_time']:12.2f} "
                  f"{row['predicted_one_load_at_a_time']:11.2f} {row['predicted_both']:7.2f} "
                  f"{row['predicted_fixed_times']:11.2f}")
    print(f"\nwrote {json_out}, {png_out}, {out.name}.details.json "
          f"({time.perf_counter() - began:.0f} s; all-resident row: {ALL_RESIDENT})")
    return 1 if any(r.errors for r in result.runs.values()) else 0


if __name__ == "__main__":
    from orchestrator.cli import run_script  # SIGTERM stops the servers it started, like Ctrl-C

    raise SystemExit(run_script(main))
