"""Benchmark: does the measured cost profile predict the real Triton, and is it repeatable?

For two boards (the demo board, and a board with larger experts: 20 MB classifiers, 40 MB
detectors), this:
1. exports the board (reused when unchanged) into ``--work``;
2. runs ``coserve profile`` (full) twice and once ``--quick``, timing each, and compares the two
   full runs figure by figure (acceptance: within 15%);
3. on a fresh embedded server, measures what the profile predicts, on measurements not used for
   the fit: the median of ``--loads`` fresh warm loads of another expert of the same architecture
   against ``load_time_s.disk`` (acceptance: within 25%), and the median batch latency at sizes
   between and beyond the swept ones (3, 6, 12 and the max batch) against ``K * n + B``
   (acceptance: within 15%).

Run:  .venv/bin/python benchmarks/profile_accuracy.py [--work bench-results/profile] \
          [--out benchmarks/results/profile_accuracy.json]
Prints tables and writes one JSON object. Figures depend on the host (and on what else runs on
its cores); the JSON names the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from exporter.build import export_coe
from exporter.generate import generate, preset_options
from orchestrator.coe import CoEDefinition
from orchestrator.core.profile import CostProfile
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton
from orchestrator.triton.model_config import ModelConfig
from profiler.measure import Plan
from profiler.run import experts_by_arch, machine_description, run_profile

BOARDS: dict[str, dict[str, Any]] = {
    "demo": {},
    "large": {"types": 4, "detectors": 1, "detector_share": 0.5, "components": 40, "classifier_mb": 20.0,
              "detector_mb": 40.0},
}
VALIDATION_SIZES = (3, 6, 12)


def _figures(profile: CostProfile) -> dict[str, float]:
    """Every figure of a profile, flat, for run-to-run comparison."""
    out: dict[str, float] = {"storage.concurrent_loads": float(profile.storage_concurrent_loads)}
    if profile.host_cpu_cores is not None:
        out["host.cpu_cores"] = float(profile.host_cpu_cores)
    for kind, spec in profile.processors.items():
        out[f"{kind}.unload_time_s"] = spec.unload_time_s
        out[f"{kind}.concurrent_loads"] = float(spec.concurrent_loads)
        if spec.server_idle_bytes:
            out[f"{kind}.server_idle_bytes"] = float(spec.server_idle_bytes)
        if spec.unload_cpu_s is not None:
            out[f"{kind}.unload_cpu_s"] = spec.unload_cpu_s
        # what an executor holds besides its experts (docs/profiler.md "Shared pages")
        if spec.server_growth_bytes is not None:
            out[f"{kind}.server_growth_bytes"] = float(spec.server_growth_bytes)
        if spec.shared_bytes is not None:
            out[f"{kind}.shared_bytes"] = float(spec.shared_bytes)
    for arch, per in profile.architectures.items():
        for kind, c in per.items():
            p = f"{arch}.{kind}"
            out.update({f"{p}.k_s": c.k_s, f"{p}.b_s": c.b_s, f"{p}.max_batch": float(c.max_batch),
                        f"{p}.load_time_s": c.load_time_s["disk"], f"{p}.weight_bytes": float(c.weight_bytes or 0),
                        f"{p}.activation_bytes_per_item": float(c.activation_bytes_per_item)})
            if c.load_time_cold_s is not None:
                out[f"{p}.load_time_cold_s"] = c.load_time_cold_s
            if c.load_time_idle_s is not None:
                out[f"{p}.load_time_idle_s"] = c.load_time_idle_s
            if c.peak_bytes is not None:
                out[f"{p}.peak_bytes"] = float(c.peak_bytes)
            # the shared-cores model's inputs (docs/simulator.md section 3)
            if c.load_cpu_s is not None:
                out[f"{p}.load_cpu_s"] = c.load_cpu_s
            if c.load_watch_cores is not None:
                out[f"{p}.load_watch_cores"] = c.load_watch_cores
            if c.first_batch_extra_s is not None:
                out[f"{p}.first_batch_extra_s"] = c.first_batch_extra_s
            # K and B trade off against each other in a fit; what the core uses is K*n + B
            for n in (1, c.max_batch, 16):
                out[f"{p}.batch_time_s[{n}]"] = c.batch_time_s(n)
    return out


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def _loadavg() -> float:
    """The 1-minute load average (what else ran on the cores: figures taken at > ~0.5 on this
    2-core box are "loaded")."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


async def _validate(coe: CoEDefinition, repo: Path, profile: CostProfile, loads: int, reps: int) -> list[dict[str, Any]]:
    rows = []
    by_arch = experts_by_arch(coe, repo)
    with EmbeddedTriton(repo) as server:
        adapter = TritonAdapter(server.grpc_url, process_probe=server.process_probe(), request_timeout_s=120)
        try:
            for arch, experts in by_arch.items():
                cost = profile.cost(arch, "cpu")
                assert cost is not None
                other = experts[-1]  # not the expert the profile measured, where there is another
                config = ModelConfig.read(repo / other).with_instances("cpu", 1)
                times = []
                for _ in range(loads):
                    began = time.perf_counter()
                    await adapter.load(other, config)
                    times.append(time.perf_counter() - began)
                    await adapter.unload(other)
                real = statistics.median(times)
                # these fresh loads run on an idle box: they check the profile's idle figure where
                # it has one (load_time_s.disk is then the busy one, checked in situ by serve_bench)
                idle = cost.load_time_idle_s
                figure, predicted = ("load_time_idle_s", idle) if idle is not None else ("load_time_s", cost.load_time_s["disk"])
                rows.append({"board": coe.name, "arch": arch, "figure": figure, "expert": other,
                             "predicted": predicted, "measured": real,
                             "error": _rel(predicted, real) if real else 0.0, "limit": 0.25})
                await adapter.load(other, config)
                shape = config.inputs[0].dims
                rng = np.random.default_rng(1)
                for n in sorted({*VALIDATION_SIZES, cost.max_batch}):
                    n = min(n, max(1, config.max_batch_size))
                    batch = {config.inputs[0].name: rng.random((n, *shape), dtype=np.float32)}
                    await adapter.infer(other, batch)
                    lat = []
                    for _ in range(reps):
                        began = time.perf_counter()
                        await adapter.infer(other, batch)
                        lat.append(time.perf_counter() - began)
                    real = statistics.median(lat)
                    pred = cost.batch_time_s(n)
                    rows.append({"board": coe.name, "arch": arch, "figure": f"batch_latency_s[{n}]", "expert": other,
                                 "predicted": pred, "measured": real, "error": _rel(pred, real), "limit": 0.15})
                await adapter.unload(other)
        finally:
            await adapter.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="bench-results/profile", help="where boards are exported")
    ap.add_argument("--out", default="benchmarks/results/profile_accuracy.json")
    ap.add_argument("--boards", default="demo,large")
    ap.add_argument("--loads", type=int, default=7, help="fresh loads per validation figure")
    ap.add_argument("--reps", type=int, default=30, help="inferences per validation batch size")
    args = ap.parse_args()
    work = Path(args.work)
    result: dict[str, Any] = {"machine": machine_description(), "boards": {}}
    for board in args.boards.split(","):
        coe = generate(preset_options("demo", **BOARDS[board]), source=f"profile_accuracy {board}")
        coe = dataclasses.replace(coe, name=board)
        repo = work / board
        export_coe(coe, repo)
        runs = []
        load = {}
        for label, plan in (("full-1", Plan()), ("full-2", Plan()), ("quick", Plan.quick())):
            before = _loadavg()
            r = run_profile(coe, repo, ("cpu",), plan, command=f"benchmarks/profile_accuracy.py ({label})")
            runs.append((label, r))
            load[label] = {"before": before, "after": _loadavg()}
            print(f"{board}: {label} profile took {r.seconds:.1f} s (load average {before:.2f} before, "
                  f"{load[label]['after']:.2f} after)", flush=True)
        a, b = _figures(runs[0][1].profile), _figures(runs[1][1].profile)
        agreement = {k: {"run1": a[k], "run2": b[k], "diff": _rel(a[k], b[k])} for k in a if k in b}
        validation = asyncio.run(_validate(coe, repo, runs[0][1].profile, args.loads, args.reps))
        result["boards"][board] = {
            "seconds": {label: r.seconds for label, r in runs},
            "load_average": load,
            "agreement": agreement,
            "validation": validation,
            "profile": {k: v for k, v in a.items()},
        }
        print(f"\n{board}: run-to-run agreement (full profile twice; limit 15%)")
        print(f"  {'figure':<42} {'full-1':>14} {'full-2':>14} {'diff':>7}")
        for k, row in sorted(agreement.items()):
            flag = "" if row["diff"] <= 0.15 else "  <-- over 15%"
            print(f"  {k:<42} {row['run1']:>14.6g} {row['run2']:>14.6g} {row['diff'] * 100:6.1f}%{flag}")
        over = sorted(k for k, row in agreement.items() if row["diff"] > 0.15)
        print(f"  {len(agreement) - len(over)} of {len(agreement)} figures within 15%"
              + (f"; over: {', '.join(over)}" if over else ""))
        print(f"\n{board}: profile vs fresh measurements (not used for the fit)")
        for row in validation:
            flag = "ok" if row["error"] <= row["limit"] else f"OVER {row['limit'] * 100:.0f}%"
            print(f"  {row['arch']:<10} {row['figure']:<22} predicted {row['predicted'] * 1e3:8.2f} ms  "
                  f"measured {row['measured'] * 1e3:8.2f} ms  error {row['error'] * 100:5.1f}%  {flag}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    from orchestrator.cli import run_script  # SIGTERM stops the servers it started, like Ctrl-C

    raise SystemExit(run_script(main))
