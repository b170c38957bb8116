"""Scenarios for the beyond-paper features, each with its number.

    .venv/bin/python benchmarks/sim_beyond.py [--out benchmarks/sim_results/beyond.json]

1. Online probabilities: the board's mix changes half-way (popularity ranks reshuffled). coserve
   with the offline (fixed) probabilities, with online probabilities (decayed counts; eviction and
   idle-time re-placement follow them), and with an oracle: the same switch handed the new mix at
   the moment it changes. Recovery = online / oracle throughput (and the share of the oracle's gain
   over fixed probabilities that online recovers).
2. Starvation guard: one executor, every expert resident, one type carrying ~90% of a stream a
   little above what its max batches sustain (its arranged group never empties, rare types starve).
   Worst wait (enqueue -> dispatch) with and without the guard, against bound + one max batch; and
   the guard on the paper task A1 (a burst far above capacity), where no ordering can bound waits.
3. Prefetch of likely subsequent experts into free memory: hit rate (prefetched experts used
   before eviction) and the throughput effect on the paper tasks.
4. CPU-memory cache tier for GPU executors (3 GB of host memory the preset leaves unused).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.simulate.engine import SimResult, Simulation, simulate
from orchestrator.simulate.presets import load_preset
from orchestrator.simulate.workload import PAPER_TASKS, build_workload

R = 4


def online_scenarios() -> list[dict[str, Any]]:
    pre = load_preset("paper-numa")
    out = []
    for task, interval_s, requests in (
        ("A1", 0.004, 2500),  # the paper's burst: executors never idle, placement cannot move
        ("A2", 0.004, 3500),
        ("A1", 0.08, 4000),  # a stream a little below capacity: idle executors re-place
        ("B1", 0.08, 4000),
    ):
        base = PAPER_TASKS[task]
        spec = replace(base, interval_s=interval_s, requests=requests, change_at=requests // 2)
        wl = build_workload(spec, pre.profile)
        cfg = pre.config(spec.board)
        fixed = Simulation(wl, cfg, pre.profile, "coserve").run()
        on_cfg = cfg.with_features(online_probabilities=True, online_half_life=300)
        # the oracle: the same switch, handed the new mix at the moment it changes
        oracle = Simulation(wl, on_cfg, pre.profile, "coserve", oracle_probabilities=True).run()
        online_sim = Simulation(wl, on_cfg, pre.profile, "coserve")
        online = online_sim.run()
        gain = oracle.throughput_img_s - fixed.throughput_img_s
        out.append(
            {
                "task": task,
                "interval_ms": interval_s * 1e3,
                "requests": requests,
                "fixed_img_s": round(fixed.throughput_img_s, R),
                "online_img_s": round(online.throughput_img_s, R),
                "oracle_img_s": round(oracle.throughput_img_s, R),
                "fixed_switches": fixed.switches,
                "online_switches": online.switches,
                "oracle_switches": oracle.switches,
                "fixed_p99_s": round(fixed.p99_latency_s, R),
                "online_p99_s": round(online.p99_latency_s, R),
                "oracle_p99_s": round(oracle.p99_latency_s, R),
                "online_replacement_loads": online_sim.core.stats.replacement_loads,
                "online_over_oracle": round(online.throughput_img_s / oracle.throughput_img_s, R),
                "gain_recovered": round((online.throughput_img_s - fixed.throughput_img_s) / gain, R)
                if gain > 0.02 * fixed.throughput_img_s
                else None,
            }
        )
    return out


def _guard_row(
    scenario: str, bound: float, one_batch: float, free: SimResult, guarded: SimResult
) -> dict[str, Any]:
    """One starvation-guard result: the same run without (``free``) and with the guard."""
    return {
        "scenario": scenario,
        "bound_s": bound,
        "bound_plus_one_batch_s": round(bound + one_batch, R),
        "worst_wait_without_s": round(free.max_wait_s, R),
        "worst_wait_with_s": round(guarded.max_wait_s, R),
        "throughput_without": round(free.throughput_img_s, R),
        "throughput_with": round(guarded.throughput_img_s, R),
    }


def starvation_scenarios() -> list[dict[str, Any]]:
    pre = load_preset("paper-numa")
    prof = pre.profile
    c = prof.cost("resnet101", "gpu")
    assert c is not None
    one_batch = c.batch_time_s(c.max_batch)
    out = []
    cfg = ServeConfig(executors=(ExecutorConfig("gpu0", "gpu", int(30 * 178.6e6 + 16 * 16e6)),))
    for zipf in (3.0, 4.0):
        for bound in (0.25, 0.5, 1.0):
            spec = replace(
                PAPER_TASKS["A1"],
                name="hot",
                types=10,
                requests=1500,
                interval_s=0.007,
                zipf=zipf,
                detectors=0,
            )
            wl = build_workload(spec, prof)
            free = simulate(wl, cfg, prof, "em-ra")
            g = simulate(wl, cfg.with_features(starvation_bound_s=bound), prof, "em-ra")
            out.append(
                _guard_row(f"hot stream, zipf {zipf}, em-ra, 1 GPU executor", bound, one_batch, free, g)
            )
    wl = build_workload(PAPER_TASKS["A1"], prof)
    cfg = pre.config("A")
    free = simulate(wl, cfg, prof, "coserve")
    for bound in (10.0, 30.0):
        g = simulate(wl, cfg.with_features(starvation_bound_s=bound), prof, "coserve")
        out.append(
            _guard_row(
                "paper task A1 burst, coserve (overloaded: 250 img/s offered)", bound, one_batch, free, g
            )
        )
    return out


def prefetch_scenarios() -> list[dict[str, Any]]:
    out = []
    for preset in ("paper-numa", "paper-uma"):
        pre = load_preset(preset)
        for task in ("A1", "B1"):
            for share in (0.3, 0.8):
                spec = replace(PAPER_TASKS[task], detector_share=share, detectors=8)
                wl = build_workload(spec, pre.profile)
                cfg = pre.config(spec.board)
                off = simulate(wl, cfg, pre.profile, "coserve")
                on = simulate(wl, cfg.with_features(prefetch=True), pre.profile, "coserve")
                out.append(
                    {
                        "preset": preset,
                        "task": task,
                        "detectors": 8,
                        "detector_share": share,
                        "prefetch_loads": on.prefetch_loads,
                        "prefetch_hits": on.prefetch_hits,
                        "hit_rate": round(on.prefetch_hits / on.prefetch_loads, R)
                        if on.prefetch_loads
                        else None,
                        "throughput_off": round(off.throughput_img_s, R),
                        "throughput_on": round(on.throughput_img_s, R),
                        "switches_off": off.switches,
                        "switches_on": on.switches,
                    }
                )
    return out


def cpu_cache_scenarios() -> list[dict[str, Any]]:
    pre = load_preset("paper-numa")
    out = []
    for task in ("A1", "A2", "B1", "B2"):
        spec = PAPER_TASKS[task]
        wl = build_workload(spec, pre.profile)
        cfg = pre.config(spec.board)
        off = simulate(wl, cfg, pre.profile, "coserve")
        on = simulate(
            wl, replace(cfg, cpu_cache_bytes=int(3e9)).with_features(cpu_cache=True), pre.profile, "coserve"
        )
        out.append(
            {
                "task": task,
                "cpu_cache_bytes": int(3e9),
                "throughput_off": round(off.throughput_img_s, R),
                "throughput_on": round(on.throughput_img_s, R),
                "switches_off": off.switches,
                "switches_on": on.switches,
                "loads_by_tier_on": on.loads_by_tier,
            }
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).with_name("sim_results") / "beyond.json"))
    args = ap.parse_args()
    res = {
        "online_probabilities": online_scenarios(),
        "starvation_guard": starvation_scenarios(),
        "prefetch": prefetch_scenarios(),
        "cpu_cache": cpu_cache_scenarios(),
    }
    for k, rows in res.items():
        print(f"== {k}")
        for row in rows:
            print("  ", json.dumps(row, sort_keys=True))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, sort_keys=True, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
