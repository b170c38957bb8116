"""``coserve plan`` on the real embedded Triton: its pick against a grid run with ``coserve bench``.

What it does:
1. the 100-type CPU-scaled board of ``benchmarks/serve_bench.py`` (generated and exported into
   ``--work``, reused when unchanged) and its cost profile (the cached ``<repo>/profile.yaml``
   when it is current and was measured with the full plan, else a full one measured now);
2. the memory: the experts' profiled footprint / ``--ratio`` (4, as serve_bench) as the raw host
   bytes coserve may use (``--cpu-bytes``);
3. ``coserve plan --profile <repo>/profile.yaml --coe coe.yaml --cpu-bytes N`` (policy coserve+,
   method best) writes ``--work/plan.yaml``;
4. a grid of executor counts x memory splits, each point the median of ``--repeats`` (3)
   ``coserve bench`` runs (``orchestrator.bench.run_bench``, policy coserve+, no all-resident run)
   of ``--requests`` requests every 4 ms after the 200-request warm-up: 1 CPU executor with all the
   memory, 2 CPU executors splitting it 50/50, 65/35 and 80/20 (this box has 2 cores: 1-2 CPU
   executors is the honest range); budgets from the same overhead rules the plan uses. The runs go
   in rounds (every point once, then again), each with the box's load average beside it. The plan's
   pick runs from its own file (``load_serve_file``), so ``coserve bench --config`` reads it;
5. writes ``benchmarks/results/plan_grid.json`` and ``.md``: every point (real median, the runs,
   the simulator's prediction on the same request sequence), whether the pick reaches 90% of the
   grid's best and the simulator's prediction error for the pick (target 25%).

Memory splits here are between executors: inside an executor the core keeps one max batch of
activations free and gives the rest to experts (on this board a max batch is ~5 MB of ~870 MB).
Run:  nohup .venv/bin/python benchmarks/plan_grid.py > bench-results/plan_grid.log 2>&1 &
Figures depend on what else runs on the box's two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_board import prepare_board  # benchmarks/ is sys.path[0] when run as a script

from orchestrator.bench import budget_serve_file, expert_footprint_bytes, run_bench
from orchestrator.cli import main as coserve
from orchestrator.coe import load_coe
from orchestrator.plan.inputs import coe_evaluator
from orchestrator.plan.memory import Candidate, Machine
from orchestrator.serve_file import ServeFile, load_serve_file
from profiler.run import machine_description

ROOT = Path(__file__).resolve().parents[1]
GRID: tuple[tuple[float, ...], ...] = ((1.0,), (0.5, 0.5), (0.65, 0.35), (0.8, 0.2))
POLICY = "coserve+"


def bench_once(spec: ServeFile, profile: Path, requests: int) -> dict[str, Any]:
    """One ``coserve bench`` run of ``POLICY`` on ``spec``, with the box's load average around it."""
    t = time.perf_counter()
    load_before = os.getloadavg()[0]
    res = run_bench(spec, policies=[POLICY], profile=profile, requests=requests, all_resident=False)
    r = res.runs[POLICY]
    pred = r.predicted.throughput_img_s if r.predicted else None
    return {"img_s": round(r.throughput_img_s, 3), "predicted_img_s": round(pred, 3) if pred else None,
            "switches": r.switches, "errors": r.errors, "seconds": round(time.perf_counter() - t, 1),
            "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def summarise(spec: ServeFile, runs: list[dict[str, Any]]) -> dict[str, Any]:
    med = statistics.median(float(x["img_s"] or 0.0) for x in runs)
    preds = [float(x["predicted_img_s"]) for x in runs if x["predicted_img_s"] is not None]
    return {"img_s": med, "predicted_img_s": statistics.median(preds) if preds else None, "runs": runs,
            "budgets": {e.name: e.budget_bytes for e in spec.config.executors}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="bench-results/serve_bench", help="board, repository and plan.yaml")
    ap.add_argument("--out", default="benchmarks/results/plan_grid")
    ap.add_argument("--types", type=int, default=100)
    ap.add_argument("--ratio", type=float, default=4.0, help="experts' profiled footprint / memory")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    began = time.perf_counter()
    say = lambda line: print(line, flush=True)  # noqa: E731

    work = Path(args.work)
    board = prepare_board(work, args.types, say)
    coe, coe_path, repo, profile_path, profile = board.coe, board.coe_path, board.repo, board.profile_path, board.profile
    cpu_bytes = int(expert_footprint_bytes(coe, profile) / args.ratio)
    say(f"memory: {cpu_bytes / 2**20:.0f} MiB of host memory (footprint / {args.ratio:g})")

    plan_yaml, plan_json = work / "plan.yaml", work / "plan.json"
    t = time.perf_counter()
    code = coserve(["plan", "--profile", str(profile_path), "--coe", str(coe_path), "--repo", str(repo),
                    "--cpu-bytes", str(cpu_bytes), "--requests", str(args.requests), "--out", str(plan_yaml),
                    "--json", str(plan_json)])
    plan_s = time.perf_counter() - t
    if code:
        say(f"coserve plan exited {code}")
        return code
    plan = json.loads(plan_json.read_text())
    # read as coserve serve/bench read it; without the verdict log, which would answer a repeated
    # run's components (the same board and component ids) from the log instead of serving them
    chosen_spec = replace(load_serve_file(plan_yaml), verdict_log=None)
    say(f"plan: {plan['chosen']} ({plan['chosen_method']}), predicted {plan['predicted_img_s']:.2f} img/s, "
        f"{plan['runs']} runs in {plan_s:.0f} s")

    ev = coe_evaluator(load_coe(coe_path), profile, Machine(cpu_bytes), policy=POLICY, requests=args.requests)
    specs: dict[str, ServeFile] = {}
    predicted: dict[str, float] = {}
    chosen_label = None
    for shares in GRID:
        cand = Candidate(0, shares)
        lay = ev.layout(cand)
        if lay is None:
            say(f"{cand.label(0)}: does not fit")
            continue
        label = cand.label(0) if len(set(shares)) > 1 or len(shares) == 1 else f"{len(shares)} CPU (50%/50%)"
        base = budget_serve_file(coe_path, repo, 2 * len(shares), executors=len(shares), profile=profile_path)
        specs[label] = replace(base, config=lay.written)
        if lay.written.executors == chosen_spec.config.executors and lay.written.features == chosen_spec.config.features:
            chosen_label = label
            specs[label] = chosen_spec  # the plan's own file
        predicted[label] = round(ev.score(cand) or 0.0, 3)
    if chosen_label is None:
        chosen_label = f"plan: {plan['chosen']}"
        say(f"the plan's pick {plan['chosen']} is not a grid point: running it too")
        specs[chosen_label] = chosen_spec
        predicted[chosen_label] = plan["predicted_img_s"]
    # rounds: every point once per round, so that a drift in what else loads the box's two cores
    # falls on every point alike (the first version ran each point's three runs back to back)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in specs}
    for i in range(args.repeats):
        for label, spec in specs.items():
            r = bench_once(spec, profile_path, args.requests)
            runs[label].append(r)
            say(f"round {i + 1}, {label} (budgets {[e.budget_bytes for e in spec.config.executors]}): "
                f"{r['img_s']:.2f} img/s (predicted {r['predicted_img_s']}), {r['switches']} switches, "
                f"{r['errors']} errors, {r['seconds']:.0f} s, load {r['load_avg_1m']}")
    points = {k: {**summarise(specs[k], runs[k]), "plan_predicted_img_s": predicted[k]} for k in specs}
    best = max(points, key=lambda k: points[k]["img_s"])
    ch = points[chosen_label]
    share = ch["img_s"] / points[best]["img_s"]
    err = (ch["predicted_img_s"] - ch["img_s"]) / ch["img_s"] if ch["predicted_img_s"] else None
    plan_err = (plan["predicted_img_s"] - ch["img_s"]) / ch["img_s"]
    checks = [
        {"check": "plan's pick >= 90% of the grid's best (medians of 3)", "pass": share >= 0.9,
         "detail": f"{chosen_label} {ch['img_s']:.2f} vs {best} {points[best]['img_s']:.2f} img/s = {share:.1%}"},
        {"check": "simulator within 25% of the pick's real throughput (same request sequence)",
         "pass": err is not None and abs(err) <= 0.25,
         "detail": f"predicted {ch['predicted_img_s']} vs real {ch['img_s']:.2f} img/s ({err:+.1%})" if err is not None else "-"},
    ]
    result = {
        "machine": machine_description(), "command": " ".join(["plan_grid.py", *(argv or sys.argv[1:])]),
        "profile": str(profile_path), "cpu_bytes": cpu_bytes, "requests": args.requests, "warmup": 200,
        "interval_ms": 4.0, "repeats": args.repeats, "policy": POLICY, "plan": plan, "plan_seconds": round(plan_s, 1),
        "chosen": chosen_label, "grid_best": best, "share_of_best": round(share, 4),
        "prediction_error_same_sequence": None if err is None else round(err, 4),
        "prediction_error_plan_search_seeds": round(plan_err, 4),
        "points": points, "checks": checks, "seconds": round(time.perf_counter() - began, 1),
    }
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"{args.requests} requests every 4 ms after a 200-request warm-up, policy {POLICY}, "
          f"{cpu_bytes / 2**20:.0f} MiB host memory; median of {args.repeats} runs (noisy: a shared 2-core box)", "",
          "| layout | budgets MiB | real img/s (median) | runs | predicted, same sequence | plan's prediction | box load (1 min) |",
          "|---|---|---|---|---|---|---|"]
    for k, p in points.items():
        mark = " **(plan)**" if k == chosen_label else ""
        md.append(f"| {k}{mark} | {' / '.join(f'{b / 2**20:.0f}' for b in p['budgets'].values())} | {p['img_s']:.2f} | "
                  f"{', '.join(format(r['img_s'], '.2f') for r in p['runs'])} | {p['predicted_img_s']} | {p['plan_predicted_img_s']} | "
                  f"{min(min(r['load_avg_1m']) for r in p['runs']):.1f}-{max(max(r['load_avg_1m']) for r in p['runs']):.1f} |")
    md.append("")
    md.extend(f"- [{'PASS' if c['pass'] else 'FAIL'}] {c['check']}: {c['detail']}" for c in checks)
    md.append(f"- the plan's own prediction (its search seeds) vs the pick's real median: {plan_err:+.1%}")
    (out.parent / f"{out.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
