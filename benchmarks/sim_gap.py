"""Where coserve+ loses against the compulsory bound on the paper tasks (warm start), counted.

    .venv/bin/python benchmarks/sim_gap.py [--out benchmarks/sim_results/gap.json] [--markdown F]

On every paper task the shared disk is the bottleneck (docs/simulator.md section 6), so a run's
throughput follows its number of disk loads, and the gap to the bound is loads the bound does not
make. For coserve+ (and, where asked, other policies) this counts, per preset and task:

- ``start_needed``: needed experts (used by a counted request) the start holds, against the
  best start of the layout that sets the bound (``bound_start``) and of the roomiest layout
  (``roomiest_start``: what the bound's fewest loads are counted from);
- ``floor``: needed experts the start does not hold (each must be read at least once);
- ``excess``: disk loads beyond the floor, split into ``reloads`` (an expert read again after it
  was evicted during the measured task) by when that eviction happened: ``in_window`` (before
  the task's last arrival, when the requests still to come were unknown) or ``after``; and
  ``other`` (loads of unneeded experts, or a second copy of an expert another executor holds);
- the same for coserve+ on layouts with fewer GPU executor processes: the serve config's GPU
  budgets merged into ``n`` processes, each process not run giving back its CUDA context
  (``gpu_context_bytes``, the rule Samba-CoE's single process gets). The bound stays the one of
  the preset's serve config (it already allows for the one-process layout).

Nothing here is a target; it is the evidence behind docs/simulator.md's "what does not reach the
targets". Exit status 0 always (a measurement, not a check).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_io import write_result  # benchmarks/ is sys.path[0] when run as a script

from orchestrator.core.decisions import Decision, Load, Unload
from orchestrator.core.layout import gpu_process_bytes
from orchestrator.core.policies import POLICIES
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.simulate.bounds import compute_bounds
from orchestrator.simulate.engine import Simulation
from orchestrator.simulate.presets import load_preset
from orchestrator.simulate.workload import PAPER_TASKS, Workload, build_workload

R = 4


def gpu_processes(config: ServeConfig, n: int) -> ServeConfig:
    """``config`` with its GPU executors merged into ``n`` processes: the GPU budgets plus the
    CUDA contexts of the processes no longer run, split evenly; CPU executors unchanged."""
    gpus = [e for e in config.executors if e.kind == "gpu"]
    cpus = [e for e in config.executors if e.kind == "cpu"]
    if not 1 <= n <= len(gpus):
        raise ValueError(f"{n} GPU processes: the config has {len(gpus)} GPU executors")
    whole = gpu_process_bytes(config, n)
    merged = tuple(ExecutorConfig(f"gpu{i}", "gpu", int(whole // n)) for i in range(n))
    return replace(config, executors=(*merged, *cpus))


class _Recorder(Simulation):
    """The simulator, recording the measured task's loads and unloads (time, kind, executor,
    expert, tier or reason) and the state it starts from."""

    log: list[tuple[float, str, str, str, str]] | None = None  # None until the measured task
    start: frozenset[str] = frozenset()

    def _reset_measurement(self) -> None:
        super()._reset_measurement()
        self.log = []
        self.start = frozenset(x for n in self.core.executor_names() for x in self.core.pool(n).resident())

    def _execute(self, decisions: list[Decision]) -> None:
        if self.log is not None:
            for d in decisions:
                if isinstance(d, Load):
                    self.log.append((self.now, "load", d.executor, d.expert, d.tier))
                elif isinstance(d, Unload):
                    self.log.append((self.now, "unload", d.executor, d.expert, d.reason))
        super()._execute(decisions)


def count_losses(workload: Workload, config: ServeConfig, profile: Any, policy: str) -> dict[str, Any]:
    sim = _Recorder(workload, config, profile, policy)
    res = sim.run()
    assert sim.log is not None
    needed = workload.distinct_experts()  # a detector only where the verdict calls for it
    first = min(sim.arrival.values())
    window_end = max(sim.arrival.values())
    start_needed = len(needed & sim.start)
    floor = len(needed - sim.start)
    evicted_at: dict[str, float] = {}
    read: set[str] = set()
    in_window = after = 0
    disk = 0
    for t, kind, _executor, expert, what in sim.log:
        if kind == "unload":
            evicted_at[expert] = t
            continue
        if what != "disk":
            continue
        disk += 1
        if expert in evicted_at and (expert in sim.start or expert in read):
            if evicted_at[expert] <= window_end:
                in_window += 1
            else:
                after += 1
        read.add(expert)
    excess = disk - floor
    return {
        "throughput_img_s": round(res.throughput_img_s, R),
        "disk_loads": disk,
        "start_resident": len(sim.start),
        "start_needed": start_needed,
        "floor": floor,
        "excess": excess,
        "reloads_evicted_in_window": in_window,
        "reloads_evicted_after": after,
        "other": excess - in_window - after,
        "window_s": round(window_end - first, R),
    }


def run(presets: Sequence[str], tasks: Sequence[str], policies: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for preset_name in presets:
        pre = load_preset(preset_name)
        for task in tasks:
            spec = PAPER_TASKS[task]
            wl = build_workload(spec, pre.profile)
            cfg = pre.config(spec.board)
            b = compute_bounds(wl, cfg, pre.profile)
            bound_img_s = b.counted / b.compulsory_s
            n_gpu = sum(1 for e in cfg.executors if e.kind == "gpu")
            variants: list[tuple[str, ServeConfig, str]] = [(p, cfg, p) for p in policies]
            variants += [
                (f"coserve+ on {n} GPU process{'es' if n > 1 else ''}", gpu_processes(cfg, n), "coserve+")
                for n in range(1, n_gpu)
            ]
            for label, c, policy in variants:
                row = count_losses(wl, c, pre.profile, policy)
                rows.append(
                    {
                        "preset": preset_name,
                        "task": task,
                        "run": label,
                        **row,
                        "of_compulsory": round(row["throughput_img_s"] / bound_img_s, R),
                        "bound_img_s": round(bound_img_s, R),
                        "bound_loads": b.compulsory_loads,
                        "bound_start": b.binding_start_resident,
                        "roomiest_start": b.start_resident,
                    }
                )
                print(
                    f"{preset_name}/{task} {label}: {row['throughput_img_s']:.2f} img/s "
                    f"({rows[-1]['of_compulsory']:.1%} of {bound_img_s:.2f}), "
                    f"{row['disk_loads']} loads = floor {row['floor']} + excess {row['excess']}",
                    file=sys.stderr,
                    flush=True,
                )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| preset/task | run | img/s (of compulsory) | start holds / bound's (roomiest's) | floor | excess | "
        "reloads: evicted in window / after | other | disk loads / bound's |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['preset'].removeprefix('paper-')}/{r['task']} | {r['run']} | "
        f"{r['throughput_img_s']:.2f} ({r['of_compulsory']:.1%}) | {r['start_needed']} / {r['bound_start']} ({r['roomiest_start']}) | "
        f"{r['floor']} | {r['excess']} | {r['reloads_evicted_in_window']} / {r['reloads_evicted_after']} | "
        f"{r['other']} | {r['disk_loads']} / {r['bound_loads']} |\n"
        for r in rows
    )
    return head + body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/sim_results/gap.json"))
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--preset", action="append", default=None, choices=["paper-numa", "paper-uma"],
                    help="paper-numa and paper-uma by default")
    ap.add_argument("--task", action="append", default=None, choices=sorted(PAPER_TASKS),
                    help="every paper task by default")
    ap.add_argument("--policy", action="append", default=None, help="coserve and coserve+ by default")
    args = ap.parse_args()
    for p in args.policy or ():
        if p not in POLICIES:
            ap.error(f"--policy {p!r}: not a registered policy ({', '.join(sorted(POLICIES))})")
    rows = run(
        args.preset or ["paper-numa", "paper-uma"],
        args.task or sorted(PAPER_TASKS),
        args.policy or ["coserve", "coserve+"],
    )
    write_result(args.out, {"command": "benchmarks/sim_gap.py", "rows": rows})
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
