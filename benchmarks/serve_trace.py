"""Where serving's time goes on the real Triton: every load and batch of a short bench run, timed.

Issue 9's prediction gap: the simulator over-predicted every switching policy by +48..+77% while
its switch counts matched. This benchmark records, for a short ``coserve bench`` run of each
``--policy`` on the bench board (``bench_board.py``, budget as ``serve_bench.py``):

- every load's own time (from when it holds one of the backend's load channels until Triton
  answers READY) and how many other loads and batches ran beside it;
- every batch's time (the Triton infer call), its size, whether it was the expert's first batch
  after its load, and how many loads ran beside it;
- the CPU seconds the box spent (``/proc/stat``) and this process (the orchestrator, the bench
  client and the memory sampler) spent during the measured task.

It changes nothing in the engine: it wraps the adapters' ``load`` and ``infer`` of the backend the
engine was given (through ``run_service``'s ``on_engine`` hook). Output: a JSON summary
(``--out``, default ``bench-results/serve_trace.json``) and a printed table.

Run:  .venv/bin/python benchmarks/serve_trace.py --requests 200 --policy samba-lru --policy coserve
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench_board import prepare_board  # benchmarks/ is sys.path[0] when run as a script

import orchestrator.serve as serve_module
from orchestrator.bench import (
    all_resident_config,
    bench_workload,
    budget_serve_file,
    expert_footprint_bytes,
    run_one,
)
from orchestrator.core.profile import CostProfile

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Op:
    kind: str  # "load" | "infer"
    executor: str
    expert: str
    began: float
    ended: float = 0.0
    n: int = 0
    first: bool = False  # infer: the expert's first batch on this executor since its load


@dataclass
class Trace:
    ops: list[Op] = field(default_factory=list)
    loaded: set[tuple[str, str]] = field(default_factory=set)  # loaded, not yet run
    window: tuple[float, float] | None = None

    def wrap(self, executor: str, adapter: Any) -> None:
        load, infer = adapter.load, adapter.infer

        async def timed_load(name: str, *a: Any, **kw: Any) -> Any:
            op = Op("load", executor, name, time.perf_counter())
            self.ops.append(op)
            try:
                return await load(name, *a, **kw)
            finally:
                op.ended = time.perf_counter()
                self.loaded.add((executor, name))

        async def timed_infer(name: str, inputs: Any, *a: Any, **kw: Any) -> Any:
            n = len(next(iter(inputs.values())))
            first = (executor, name) in self.loaded
            self.loaded.discard((executor, name))
            op = Op("infer", executor, name, time.perf_counter(), n=n, first=first)
            self.ops.append(op)
            try:
                return await infer(name, inputs, *a, **kw)
            finally:
                op.ended = time.perf_counter()

        adapter.load, adapter.infer = timed_load, timed_infer


def cpu_busy_s() -> float:
    """The box's busy CPU seconds since boot (``/proc/stat``: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def triton_cpu_s(pid: int) -> float:
    """CPU seconds of a tritonserver, its reaped children (unloaded model processes) and its
    living model processes (``/proc``)."""
    def stat(p: int) -> list[str]:
        try:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return []
    tck = os.sysconf("SC_CLK_TCK")
    f = stat(pid)
    total = sum(int(v) for v in f[11:15]) / tck if f else 0.0
    for child in Path("/proc").iterdir():
        if child.name.isdigit():
            c = stat(int(child.name))
            if c and c[1] == str(pid):  # its parent
                total += (int(c[11]) + int(c[12])) / tck
    return total


def overlap(op: Op, others: Sequence[Op]) -> float:
    """Mean number of ``others`` running during ``op`` (time-weighted)."""
    span = max(op.ended - op.began, 1e-9)
    return sum(max(0.0, min(op.ended, o.ended) - max(op.began, o.began)) for o in others if o is not op) / span


def model_time(profile: CostProfile, arch: str, n: int) -> float:
    """The profile's ``K n + B`` for a CPU batch of ``arch``."""
    cost = profile.cost(arch, "cpu")
    assert cost is not None, f"the profile has no cpu entry for {arch}"
    return cost.batch_time_s(n)


def summarise(trace: Trace, profile: CostProfile, arch_of: Callable[[str], str]) -> dict[str, Any]:
    lo, hi = trace.window or (0.0, float("inf"))
    ops = [o for o in trace.ops if o.ended and lo <= o.began <= hi]
    loads = [o for o in ops if o.kind == "load"]
    infers = [o for o in ops if o.kind == "infer"]
    out: dict[str, Any] = {"loads": len(loads), "batches": len(infers)}

    def stats(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return {"n": len(values), "mean": round(statistics.fmean(values), 4),
                "median": round(statistics.median(values), 4)}

    out["load_s"] = stats([o.ended - o.began for o in loads])
    by_other: dict[str, list[float]] = {}
    for o in loads:
        k = round(overlap(o, loads))
        by_other.setdefault(f"other_loads~{k}", []).append(o.ended - o.began)
    out["load_s_by_other_loads"] = {k: stats(v) for k, v in sorted(by_other.items())}
    out["load_busy_compute_share"] = round(statistics.fmean([overlap(o, infers) for o in loads]), 3) if loads else None
    # batches against the profile's K n + B
    ratio_first: list[float] = []
    ratio_rest: list[float] = []
    extra_first: list[float] = []
    extra_rest: list[float] = []
    by_loads: dict[str, list[float]] = {}
    for o in infers:
        c = profile.cost(arch_of(o.expert), "cpu")
        assert c is not None
        took, model = o.ended - o.began, c.batch_time_s(o.n)
        (ratio_first if o.first else ratio_rest).append(took / model)
        (extra_first if o.first else extra_rest).append(took - model)
        if not o.first:
            by_loads.setdefault(f"loads_beside~{round(overlap(o, loads))}", []).append(took - model)
    out["batch_over_model_first"] = stats(ratio_first)
    out["batch_over_model_rest"] = stats(ratio_rest)
    out["batch_extra_s_first"] = stats(extra_first)
    out["batch_extra_s_rest"] = stats(extra_rest)
    out["batch_extra_s_rest_by_loads_beside"] = {k: stats(v) for k, v in sorted(by_loads.items())}
    out["compute_s"] = round(sum(o.ended - o.began for o in infers), 3)
    out["compute_model_s"] = round(sum(model_time(profile, arch_of(o.expert), o.n) for o in infers), 3)
    out["load_sum_s"] = round(sum(o.ended - o.began for o in loads), 3)
    return out


def trace_one(spec: Any, wl: Any, profile: CostProfile, arch_of: Callable[[str], str],
              say: Callable[[str], None]) -> dict[str, Any]:
    """One ``run_one`` of ``spec`` with every load and batch traced (module doc)."""
    trace = Trace()
    pids: list[int] = []
    cpu: dict[str, float] = {}
    original = serve_module.serve_until_done

    async def traced(spec: Any, work: Any, **options: Any) -> Any:
        inner = options.pop("on_engine", None)

        def on_engine(engine: Any, embedded: Any) -> None:
            for ex, target in engine.backend.targets.items():
                trace.wrap(ex, target.adapter)
            pids.extend(s.pid for s in embedded.values() if s.pid is not None)
            if inner is not None:
                inner(engine, embedded)

        async def timed_work(service: Any) -> Any:
            # warm-up and measured task together (both switch the same way)
            t0, box0, own0 = time.perf_counter(), cpu_busy_s(), sum(os.times()[:2])
            tri0 = sum(triton_cpu_s(p) for p in pids)
            n0 = len(trace.ops)
            try:
                return await work(service)
            finally:
                ops = trace.ops[n0:]
                cpu.update({
                    "wall_s": time.perf_counter() - t0, "box_busy_s": cpu_busy_s() - box0,
                    "this_process_s": sum(os.times()[:2]) - own0,
                    "triton_s": sum(triton_cpu_s(p) for p in pids) - tri0,
                    "loads": sum(1 for o in ops if o.kind == "load"),
                    "batches": sum(1 for o in ops if o.kind == "infer"),
                    "model_compute_s": sum(model_time(profile, arch_of(o.expert), o.n) for o in ops if o.kind == "infer"),
                })

        return await original(spec, timed_work, on_engine=on_engine, **options)

    serve_module.serve_until_done = traced  # type: ignore[assignment]
    try:
        run = asyncio.run(run_one(spec, spec.config.policy, wl, say=say))
    finally:
        serve_module.serve_until_done = original  # type: ignore[assignment]
    # the trace window: the measured stream (its makespan, back from the last operation)
    ends = sorted(o.ended for o in trace.ops if o.ended)
    trace.window = (ends[-1] - run.makespan_s, ends[-1]) if ends else None
    row = summarise(trace, profile, arch_of)
    row.update({"throughput_img_s": round(run.throughput_img_s, 3), "makespan_s": round(run.makespan_s, 3),
                "switches": run.switches, "cpu_warmup_and_task": {k: round(v, 3) for k, v in cpu.items()}})
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="bench-results/serve_bench")
    ap.add_argument("--out", default="bench-results/serve_trace.json")
    ap.add_argument("--types", type=int, default=100)
    ap.add_argument("--ratio", type=float, default=4.0)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--interval-ms", type=float, default=4.0)
    ap.add_argument("--policy", action="append", default=None)
    ap.add_argument("--all-resident", action="store_true", help="also the all-resident case (no switches)")
    args = ap.parse_args(argv)
    say = lambda line: print(line, flush=True)  # noqa: E731
    board = prepare_board(Path(args.work), args.types, say)
    coe, profile = board.coe, board.profile
    budget = int(expert_footprint_bytes(coe, profile) / args.ratio)
    spec = budget_serve_file(board.coe_path, board.repo, budget, profile=board.profile_path)
    wl = bench_workload(coe, args.requests, args.interval_ms / 1000.0, args.warmup)
    results: dict[str, Any] = {"machine_load_avg": os.getloadavg(), "requests": args.requests}
    for policy in args.policy or ["samba-lru", "coserve"]:
        results[policy] = trace_one(replace(spec, config=replace(spec.config, policy=policy)), wl, profile,
                                    lambda e: coe.experts[e].arch, say)
        say(json.dumps({policy: results[policy]}, indent=1))
    if args.all_resident:
        resident = replace(spec, config=all_resident_config(spec.config, coe, profile))
        results["all-resident"] = trace_one(resident, wl, profile, lambda e: coe.experts[e].arch, say)
        say(json.dumps({"all-resident": results["all-resident"]}, indent=1))
    out = Path(args.out)
    out = out if out.is_absolute() else ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from orchestrator.cli import run_script

    raise SystemExit(run_script(main))
