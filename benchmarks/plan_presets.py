"""Acceptance of ``coserve plan`` on the paper presets, in simulation.

For each preset (paper-numa: 13 GB host + one 12.88 GB GPU; paper-uma: its 18 GB of unified memory
as the preset splits it, 8 GB host + 10 GB GPU) and each paper task:

1. ``--method paper --policy coserve``: the paper method's pick, checked to be within one GPU
   executor of the paper's best configuration (3 GPU + 1 CPU on board A, 4 GPU + 1 CPU on B);
2. ``--method best`` for ``coserve+`` (the default policy): its pick and its reason;
3. for both picks, a simulated grid (GPU executors 1..6 x CPU executors 0..2, even splits) scored on
   ``--holdout`` held-out seeds (the task's own seed and others: never the seeds the search used),
   and the pick scored on the same seeds: it must reach 95% of the grid's best.

Writes ``benchmarks/results/plan_presets.json`` and ``.md``; exits 1 if a check fails.
Run:  .venv/bin/python benchmarks/plan_presets.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.plan.evaluate import Evaluator, holdout_seeds
from orchestrator.plan.inputs import preset_evaluator
from orchestrator.plan.memory import Machine
from orchestrator.plan.paper import count_candidates
from orchestrator.plan.result import make_plan
from orchestrator.simulate.presets import load_preset

ROOT = Path(__file__).resolve().parents[1]
MACHINES = {
    "paper-numa": Machine(13_000_000_000, (12_880_000_000,)),  # 16 GB - 3 GB for the OS; 12 GiB GPU
    "paper-uma": Machine(8_000_000_000, (10_000_000_000,)),  # 24 GB unified - 6 GB, as the preset splits it
}
PAPER_BEST = {"A": 3, "B": 4}  # GPU executors of the paper's best configurations (+ 1 CPU)
TASKS = ("A1", "A2", "B1", "B2")


def grid(ev: Evaluator, seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    out = []
    for cand in count_candidates(len(ev.machine.gpu_bytes), 6, 2):
        lay = ev.layout(cand)
        if lay is None:
            continue
        out.append({"label": cand.label(1), "img_s": round(ev.score_config(lay.simulated, seeds), 3)})
    return out


def one(preset_name: str, task: str, policy: str, method: str, holdout: int) -> dict[str, Any]:
    preset = load_preset(preset_name)
    t = time.perf_counter()
    ev = preset_evaluator(preset, task, MACHINES[preset_name], policy=policy)
    plan = make_plan(ev, method)
    took = time.perf_counter() - t
    seeds = holdout_seeds(ev.workload.seed, holdout)
    g = grid(ev, seeds)
    best = max(g, key=lambda r: r["img_s"])
    chosen = ev.score_config(plan.chosen.layout.simulated, seeds)
    gpus = sum(1 for e in plan.chosen.layout.written.executors if e.kind == "gpu")
    cpus = sum(1 for e in plan.chosen.layout.written.executors if e.kind == "cpu")
    return {
        "preset": preset_name, "task": task, "policy": policy, "method": method,
        "chosen": plan.chosen.label, "chosen_method": plan.chosen_method, "reason": plan.reason,
        "gpu_executors": gpus, "cpu_executors": cpus,
        "predicted_img_s_search": round(plan.chosen.score, 3),
        "runner_up": plan.runner_up.label if plan.runner_up else None,
        "holdout_seeds": list(seeds), "chosen_img_s_holdout": round(chosen, 3),
        "grid_best": best["label"], "grid_best_img_s": best["img_s"],
        "share_of_grid_best": round(chosen / best["img_s"], 4),
        "runs": plan.runs, "plan_seconds": round(took, 1), "grid": g,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--holdout", type=int, default=3, help="held-out seeds the grid is scored on")
    ap.add_argument("--task", action="append", default=None)
    ap.add_argument("--out", default="benchmarks/results/plan_presets")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for preset_name in MACHINES:
        for task in args.task or TASKS:
            for policy, method in (("coserve", "paper"), ("coserve+", "best")):
                r = one(preset_name, task, policy, method, args.holdout)
                rows.append(r)
                ok = r["share_of_grid_best"] >= 0.95
                checks.append({"check": f"{preset_name} {task} {policy} --method {method}: pick >= 95% of the held-out grid best",
                               "pass": ok, "detail": f"{r['chosen']} {r['chosen_img_s_holdout']:.2f} vs {r['grid_best']} "
                               f"{r['grid_best_img_s']:.2f} img/s = {r['share_of_grid_best']:.1%}"})
                if method == "paper":
                    target = PAPER_BEST[task[0]]
                    ok = abs(r["gpu_executors"] - target) <= 1 and r["cpu_executors"] == 1
                    checks.append({"check": f"{preset_name} {task} paper method within one GPU executor of {target} GPU + 1 CPU",
                                   "pass": ok, "detail": r["chosen"]})
                print(f"{preset_name} {task} {policy:<9} {method:<6} -> {r['chosen']:<32} search {r['predicted_img_s_search']:6.2f}  "
                      f"holdout {r['chosen_img_s_holdout']:6.2f} vs grid best {r['grid_best']} {r['grid_best_img_s']:6.2f} "
                      f"({r['share_of_grid_best']:.1%}), {r['runs']} runs, {r['plan_seconds']:.0f} s", flush=True)
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.json").write_text(json.dumps({"rows": rows, "checks": checks}, indent=2) + "\n")
    md = ["| preset | task | policy / method | pick (reason) | predicted (search seeds) | pick on held-out seeds | held-out grid best | share | runs | s |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['preset']} | {r['task']} | {r['policy']} / {r['method']} | {r['chosen']} ({r['chosen_method']}) | "
                  f"{r['predicted_img_s_search']:.2f} | {r['chosen_img_s_holdout']:.2f} | {r['grid_best']} {r['grid_best_img_s']:.2f} | "
                  f"{r['share_of_grid_best']:.1%} | {r['runs']} | {r['plan_seconds']:.0f} |")
    md.append("")
    md.extend(f"- [{'PASS' if c['pass'] else 'FAIL'}] {c['check']}: {c['detail']}" for c in checks)
    (out.parent / f"{out.name}.md").write_text("\n".join(md) + "\n")
    for c in checks:
        print(f"[{'PASS' if c['pass'] else 'FAIL'}] {c['check']}: {c['detail']}")
    return 0 if all(c["pass"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
