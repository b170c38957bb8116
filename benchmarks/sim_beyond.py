"""Scenarios for the beyond-paper features, each with its number.

    .venv/bin/python benchmarks/sim_beyond.py [--out benchmarks/sim_results/beyond.json] [--markdown F]

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
5. The section-2 features of issue 7 (queue-aware eviction, lookahead loading, serve what is
   resident, eviction headroom for slow unloads, and the ones added after measuring where coserve+
   lost time: duplicate-first eviction, disk-aware assignment, batch room) alone and together,
   and coserve+: on the paper
   tasks, on custom workloads (exit 1 if coserve+ is more than 1% below coserve on one, or a
   policy beats a bound), and with the embedded Triton's slow unloads.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.core.features import BOUND_FLAGS
from orchestrator.core.profile import parse_profile
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.simulate.bounds import compute_bounds
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


FEATURES = BOUND_FLAGS
EXPERT = 178_600_000  # one ResNet101 classifier (paper presets)
BATCH_ACT = 16 * 16_000_000  # one max batch of its activations on the GPU


def _variants() -> list[tuple[str, str, dict[str, bool]]]:
    """(label, policy, features): the paper's coserve, each feature alone, all of them, coserve+."""
    out: list[tuple[str, str, dict[str, bool]]] = [("coserve", "coserve", {})]
    out += [(f"+{f}", "coserve", {f: True}) for f in FEATURES]
    out += [("+all", "coserve", dict.fromkeys(FEATURES, True)), ("coserve+", "coserve+", {})]
    return out


def _feature_rows(wl: Any, cfg: ServeConfig, prof: Any, label: dict[str, Any]) -> list[dict[str, Any]]:
    b = compute_bounds(wl, cfg, prof)
    comp = b.counted / b.compulsory_s
    ar = b.counted / b.all_resident_s
    rows = []
    for name, policy, feats in _variants():
        r = simulate(wl, cfg.with_features(**feats), prof, policy)
        rows.append(
            {
                **label,
                "variant": name,
                "throughput_img_s": round(r.throughput_img_s, R),
                "switches": r.switches,
                "of_compulsory": round(r.throughput_img_s / comp, R),
                "compulsory_img_s": round(comp, R),
                "compulsory_switches": b.compulsory_loads,
                "all_resident_img_s": round(ar, R),
                "completed": r.completed,
            }
        )
    return rows


def feature_scenarios() -> dict[str, list[dict[str, Any]]]:
    """Each section-2 feature alone and together, and coserve+, warm start: on every paper task
    and preset; on custom workloads (one GPU executor, tiny budgets; 0 and 40 ms intervals); and
    on the embedded Triton's costs, where an unload takes ~1.1 s to release memory and a small
    expert loads in ~0.19 s (docs/triton.md)."""
    paper = []
    for preset in ("paper-numa", "paper-uma"):
        pre = load_preset(preset)
        for task, spec in PAPER_TASKS.items():
            wl = build_workload(spec, pre.profile)
            paper += _feature_rows(wl, pre.config(spec.board), pre.profile, {"preset": preset, "task": task})
    custom = []
    pre = load_preset("paper-numa")
    layouts = {
        "1 GPU executor, 10 experts": (ExecutorConfig("gpu0", "gpu", 10 * EXPERT + BATCH_ACT),),
        "tiny: 2 GPU x 3 experts + CPU x 5": (
            ExecutorConfig("gpu0", "gpu", 3 * EXPERT + BATCH_ACT),
            ExecutorConfig("gpu1", "gpu", 3 * EXPERT + BATCH_ACT),
            ExecutorConfig("cpu0", "cpu", 5 * EXPERT + 8 * 16_000_000),
        ),
    }
    for layout, execs in layouts.items():
        for interval in (0.0, 0.04):
            for zipf, dets, share in ((1.0, 2, 0.5), (0.6, 0, 0.0)):
                for seed in (1, 2):
                    spec = replace(
                        PAPER_TASKS["A1"],
                        name="custom",
                        types=120,
                        requests=600,
                        interval_s=interval,
                        zipf=zipf,
                        detectors=dets,
                        detector_share=share,
                        seed=seed,
                    )
                    wl = build_workload(spec, pre.profile)
                    label = {
                        "layout": layout,
                        "interval_ms": interval * 1e3,
                        "zipf": zipf,
                        "detectors": dets,
                        "seed": seed,
                    }
                    custom += _feature_rows(wl, ServeConfig(executors=execs), pre.profile, label)
    slow = []
    mib = 1 << 20
    for unload in (0.028, 1.1):  # docs/triton.md: fast release ~28 ms, stock ~1.1 s
        prof = parse_profile(
            {
                "storage": {"concurrent_loads": 2},
                "processors": {"cpu": {"concurrent_loads": 2, "unload_time_s": unload}},
                "architectures": {
                    "resnet101": {  # a ~10 MB ONNX expert on the embedded server (docs/triton.md)
                        "cpu": {
                            "k_s": 0.0029,
                            "b_s": 0.0011,
                            "max_batch": 8,
                            "load_time_s": {"disk": 0.19},
                            "weight_bytes": 75 * mib,
                            "activation_bytes_per_item": 2 * mib,
                        }
                    }
                },
            },
            "embedded-triton-cpu",
        )
        for n in (1, 2):
            cfg = ServeConfig(
                executors=tuple(ExecutorConfig(f"cpu{i}", "cpu", 8 * 75 * mib + 16 * mib) for i in range(n))
            )
            for interval in (0.0, 0.04):
                spec = replace(
                    PAPER_TASKS["A1"],
                    name="slow-unload",
                    types=60,
                    requests=1000,
                    interval_s=interval,
                    zipf=1.0,
                    detectors=0,
                    seed=5,
                )
                wl = build_workload(spec, prof)
                label = {"unload_s": unload, "cpu_executors": n, "interval_ms": interval * 1e3}
                slow += _feature_rows(wl, cfg, prof, label)
    return {"paper": paper, "custom": custom, "slow_unload": slow}


def custom_acceptance(rows: list[dict[str, Any]]) -> list[str]:
    """coserve+ never more than 1% below coserve on a custom workload (the bounds are checked by
    the property tests and paper_table.py)."""
    out = []
    by: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for r in rows:
        key = (r["layout"], r["interval_ms"], r["zipf"], r["seed"])
        by.setdefault(key, {})[r["variant"]] = r
    for key, v in by.items():
        base, plus = v["coserve"]["throughput_img_s"], v["coserve+"]["throughput_img_s"]
        if plus < 0.99 * base:
            out.append(
                f"custom {key}: coserve+ {plus:.2f} < 99% of coserve {base:.2f} ({plus / base - 1:+.1%})"
            )
        for name, r in v.items():
            if r["throughput_img_s"] > min(r["compulsory_img_s"], r["all_resident_img_s"]) * (1 + 1e-9):
                out.append(f"custom {key}: {name} above a bound")
    return out


def features_markdown(feats: dict[str, list[dict[str, Any]]]) -> str:
    """The feature ablation as markdown: img/s / switches (share of the compulsory bound)."""
    lines: list[str] = []
    names = [v[0] for v in _variants()]
    for section, rows in feats.items():
        lines += [f"{section}", "", "| case | compulsory | " + " | ".join(names) + " |"]
        lines.append("|---" * (len(names) + 2) + "|")
        cases: dict[str, dict[str, dict[str, Any]]] = {}
        skip = {"variant", "throughput_img_s", "switches", "of_compulsory", "compulsory_img_s"}
        skip |= {"compulsory_switches", "all_resident_img_s", "completed"}
        for r in rows:
            case = ", ".join(f"{k}={r[k]}" for k in r if k not in skip)
            cases.setdefault(case, {})[r["variant"]] = r
        for case, v in cases.items():
            any_row = next(iter(v.values()))
            cells = [
                f"{v[n]['throughput_img_s']:.2f} / {v[n]['switches']} ({v[n]['of_compulsory']:.0%})"
                for n in names
            ]
            comp = f"{any_row['compulsory_img_s']:.2f} / {any_row['compulsory_switches']}"
            lines.append(f"| {case} | {comp} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).with_name("sim_results") / "beyond.json"))
    ap.add_argument("--markdown", default=None, help="also write the feature ablation as markdown here")
    args = ap.parse_args()
    res: dict[str, Any] = {
        "online_probabilities": online_scenarios(),
        "starvation_guard": starvation_scenarios(),
        "prefetch": prefetch_scenarios(),
        "cpu_cache": cpu_cache_scenarios(),
    }
    for k, rows in res.items():
        print(f"== {k}")
        for row in rows:
            print("  ", json.dumps(row, sort_keys=True))
    feats = feature_scenarios()
    res["features"] = feats
    for k, rows in feats.items():
        print(f"== features / {k}")
        for row in rows:
            print("  ", json.dumps(row, sort_keys=True))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, sort_keys=True, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.markdown:
        Path(args.markdown).write_text(features_markdown(feats))
        print(f"wrote {args.markdown}")
    misses = custom_acceptance(feats["custom"])
    if misses:
        print("ACCEPTANCE FAILURES (custom workloads):\n  " + "\n  ".join(misses))
        return 1
    print("acceptance (custom workloads): coserve+ never more than 1% below coserve, no bound beaten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
