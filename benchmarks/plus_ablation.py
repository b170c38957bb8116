"""coserve+ with each of its features left out, on the paper tasks and on other seeds of them.

    .venv/bin/python benchmarks/plus_ablation.py [--seeds 6] [--out benchmarks/sim_results/plus_ablation.json]

Which features coserve+ turns on must not be chosen on the eight measured paper tasks alone (that
would tune the policy toward the table). This replays, warm start, every paper task spec (board,
preset, request count, mix) with its own seed and with ``--seeds`` other seeds (the same other
seeds for every variant), for coserve+ as registered, coserve+ without each of its features, and
coserve+ with each registered feature it leaves off (``--candidates``). It reports, per variant
and preset, the mean and the least share of the compulsory bound and how many runs gained or lost
against coserve+ as registered. Exit status 0 always (a measurement, not a check).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_io import write_result  # benchmarks/ is sys.path[0] when run as a script

from orchestrator.core.features import BOUND_FLAGS
from orchestrator.core.policies import PolicySpec, get_policy
from orchestrator.simulate.bounds import compute_bounds
from orchestrator.simulate.engine import simulate
from orchestrator.simulate.presets import load_preset
from orchestrator.simulate.workload import PAPER_TASKS, build_workload

R = 4
OTHER_SEEDS_FROM = 1000  # other seeds: 1000, 1001, ... (no paper task uses them)


def variants(candidates: bool) -> list[tuple[str, PolicySpec]]:
    plus = get_policy("coserve+")
    out = [("coserve+", plus)]
    out += [(f"-{f}", replace(plus, features=tuple(x for x in plus.features if x != f))) for f in plus.features]
    if candidates:
        out += [(f"+{f}", replace(plus, features=(*plus.features, f))) for f in BOUND_FLAGS if f not in plus.features]
    return out


def run(seeds: int, candidates: bool) -> list[dict[str, Any]]:
    rows = []
    vs = variants(candidates)
    for preset_name in ("paper-numa", "paper-uma"):
        pre = load_preset(preset_name)
        for task in sorted(PAPER_TASKS):
            base = PAPER_TASKS[task]
            for seed in [base.seed, *range(OTHER_SEEDS_FROM, OTHER_SEEDS_FROM + seeds)]:
                spec = replace(base, seed=seed)
                wl = build_workload(spec, pre.profile)
                cfg = pre.config(spec.board)
                b = compute_bounds(wl, cfg, pre.profile)
                bound = b.counted / b.compulsory_s
                for label, spec_v in vs:
                    r = simulate(wl, cfg, pre.profile, spec_v)
                    rows.append(
                        {
                            "preset": preset_name,
                            "task": task,
                            "seed": seed,
                            "paper_seed": seed == base.seed,
                            "variant": label,
                            "throughput_img_s": round(r.throughput_img_s, R),
                            "switches": r.switches,
                            "of_compulsory": round(r.throughput_img_s / bound, R),
                        }
                    )
            print(f"{preset_name}/{task} done", file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ref = {(r["preset"], r["task"], r["seed"]): r["of_compulsory"] for r in rows if r["variant"] == "coserve+"}
    out = []
    for preset in ("paper-numa", "paper-uma"):
        labels = list(dict.fromkeys(r["variant"] for r in rows))
        for label in labels:
            sel = [r for r in rows if r["preset"] == preset and r["variant"] == label]
            shares = [r["of_compulsory"] for r in sel]
            delta = [r["of_compulsory"] - ref[(r["preset"], r["task"], r["seed"])] for r in sel]
            paper = [r["of_compulsory"] for r in sel if r["paper_seed"]]
            out.append(
                {
                    "preset": preset,
                    "variant": label,
                    "runs": len(sel),
                    "mean_of_compulsory": round(sum(shares) / len(shares), R),
                    "min_of_compulsory": round(min(shares), R),
                    "paper_seeds_min": round(min(paper), R),
                    "mean_change_points": round(100 * sum(delta) / len(delta), 2),
                    "better": sum(1 for d in delta if d > 1e-4),
                    "worse": sum(1 for d in delta if d < -1e-4),
                }
            )
    return out


def markdown(summ: list[dict[str, Any]]) -> str:
    head = (
        "| preset | variant | mean share of compulsory | least | least on the paper seeds | "
        "mean change (points) | better / worse runs |\n|---|---|---|---|---|---|---|\n"
    )
    return head + "".join(
        f"| {s['preset']} | {s['variant']} | {s['mean_of_compulsory']:.1%} | {s['min_of_compulsory']:.1%} | "
        f"{s['paper_seeds_min']:.1%} | {s['mean_change_points']:+.2f} | {s['better']} / {s['worse']} |\n"
        for s in summ
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=6, help="other seeds per paper task spec (default 6)")
    ap.add_argument("--candidates", action="store_true", help="also coserve+ with each feature it leaves off")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/sim_results/plus_ablation.json"))
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args()
    if args.seeds < 0:
        ap.error("--seeds must be >= 0")
    rows = run(args.seeds, args.candidates)
    summ = summary(rows)
    write_result(args.out, {"command": "benchmarks/plus_ablation.py", "seeds": args.seeds, "summary": summ, "rows": rows})
    md = markdown(summ)
    if args.markdown:
        args.markdown.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
