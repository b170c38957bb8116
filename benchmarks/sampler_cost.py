"""Benchmark: what the memory sampler costs, and where its CPU goes, on real embedded servers.

Starts ``--executors`` embedded tritonservers (one per executor, as ``coserve bench`` does) on the
demo repository, keeps ``--resident`` experts loaded on each and switches them (unload the oldest,
load one not resident) at ``--events-per-s`` loads plus unloads per executor, with one
``MemorySampler`` over all servers poked at every confirmed load and unload, as
``orchestrator.bench.run_bench`` wires it. Per sampler variant it reports the sampler thread's CPU
share of one core, its CPU per event, and a breakdown of that CPU (listing the servers' children,
PSS of the servers, PSS of model processes, statm passes, bookkeeping) taken by wrapping the
sampler's methods (thread CPU time, in the sampler thread only).

Then, per variant, an accuracy phase: ``--check-events`` more switches, each followed by
``MemorySampler.sync()`` (the sampler has read the event) and a direct PSS read of that
executor's server and model processes; the figure the sampler holds is compared with the direct
one (server growth over the sampler's idle figure plus the model processes' PSS).

Defaults match a switch-heavy ``benchmarks/serve_bench.py`` run (results/serve_bench.details.json,
samba-parallel: 515 loads + 514 unloads in 88.96 s over two executors = 5.8 events/s per
executor; its budgets keep ~10-15 experts resident per executor); as the engine does (storage
channels 2), each executor has ``--in-flight`` switches under way at once, else a load slower than
the pace (0.25-0.4 s on a busy box) caps the rate. The rate reached is reported: the sampler's
cost grows with it.

Variants: "head" is the sampler as committed before this benchmark (loaded from git), "after" the
current one with its defaults, "server-pss" and "no-fd-reuse" the current one with one change
undone each (the server's PSS read at every poke; /proc files opened at every read).

Run:  .venv/bin/python benchmarks/sampler_cost.py [--seconds 60] [--variant head --variant after ...]
      [--out benchmarks/results/sampler_cost.json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.engine.memory_sampler import MemorySampler
from orchestrator.triton import processes
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton
from profiler.run import machine_description

ROOT = Path(__file__).resolve().parents[1]
THREAD = "coserve-memory-sampler"

#: the sampler as it was before this benchmark (commit e88cc67), loaded from git as "head"
HEAD_REV = "e88cc67"

#: sampler variants: constructor keywords (see the MemorySampler doc); "head" is the old code
VARIANTS: dict[str, dict[str, Any]] = {
    "head": {},
    "after": {},  # the defaults
    "server-pss": {"server_at_poke": "pss"},  # the server's PSS at every poke, files kept open
    "no-fd-reuse": {"reuse_fds": False},  # the server by statm, files opened at every read
}


def sampler_class(variant: str) -> type[Any]:
    """The MemorySampler class of a variant: the committed one at ``HEAD_REV`` for "head"."""
    if variant != "head":
        return MemorySampler
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{HEAD_REV}:orchestrator/engine/memory_sampler.py"],
        check=True, capture_output=True, text=True,
    ).stdout
    module = types.ModuleType("memory_sampler_head")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{HEAD_REV}:memory_sampler.py", "exec"), module.__dict__)  # noqa: S102 - our own file
    return module.MemorySampler  # type: ignore[no-any-return]


class Breakdown:
    """Sampler-thread CPU per method, by wrapping the sampler class's methods."""

    def __init__(self, cls: type[Any], server_pids: set[int]) -> None:
        self.cls = cls
        self.cpu: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self._saved: list[tuple[str, Any]] = []
        self._depth = 0
        self.server_pids = server_pids

    def _wrap(self, name: str, category: Callable[..., str]) -> None:
        original = getattr(self.cls, name, None)
        if original is None:
            return
        self._saved.append((name, original))
        outer = self

        def wrapper(sampler: Any, *args: Any, **kw: Any) -> Any:
            if threading.current_thread().name != THREAD or outer._depth:
                return original(sampler, *args, **kw)
            outer._depth += 1
            t = time.thread_time()
            try:
                return original(sampler, *args, **kw)
            finally:
                outer._depth -= 1
                key = category(sampler, *args)
                outer.cpu[key] += time.thread_time() - t
                outer.calls[key] += 1

        setattr(self.cls, name, wrapper)

    def install(self) -> Breakdown:
        def pss_kind(sampler: Any, pid: int, *_: Any) -> str:
            return "pss_server" if pid in self.server_pids else "pss_model"

        self._wrap("_pss", pss_kind)
        self._wrap("_children", lambda *_: "listing")
        self._wrap("_estimate", lambda *_: "statm")
        self._wrap("_statm", lambda *_: "statm")
        self._wrap("_record", lambda *_: "record")
        return self

    def remove(self) -> None:
        for name, original in reversed(self._saved):
            setattr(self.cls, name, original)
        self._saved.clear()


class Executor:
    """One executor's server, adapter and resident set; ``switch()`` is one unload + one load."""

    def __init__(self, name: str, server: EmbeddedTriton, models: list[str], resident: int) -> None:
        self.name = name
        self.server = server
        self.adapter = TritonAdapter(server.grpc_url, process_probe=server.process_probe())
        self.pool = collections.deque(models)  # not resident, in the order they are loaded
        self.resident: collections.deque[str] = collections.deque()
        self.target = resident
        self.load_s: list[float] = []
        self.events = 0

    async def fill(self) -> None:
        while len(self.resident) < self.target:
            name = self.pool.popleft()
            await self.adapter.load(name)
            self.resident.append(name)

    async def switch(self, poke: Callable[[str, str, str], None]) -> None:
        old = self.resident.popleft()
        await self.adapter.unload(old)
        poke("unload", self.name, old)
        self.pool.append(old)
        new = self.pool.popleft()
        t = time.perf_counter()
        await self.adapter.load(new)
        self.load_s.append(time.perf_counter() - t)
        poke("load", self.name, new)
        self.resident.append(new)
        self.events += 2

    async def empty(self) -> None:
        while self.resident:
            name = self.resident.pop()
            await self.adapter.unload(name)
            self.pool.appendleft(name)


def direct_figure(server_pid: int, idle: int) -> int:
    """An executor's footprint by direct PSS reads: server growth over ``idle`` plus its stubs."""
    growth = max(0, processes.memory(server_pid).pss_bytes - idle)
    return growth + sum(p.pss_bytes for p in processes.model_processes(server_pid))


async def run_variant(
    variant: str, execs: list[Executor], seconds: float, events_per_s: float, check_events: int, in_flight: int
) -> dict[str, Any]:
    """The cost phase (a sampler over ``seconds`` of switching) and, for the current code, the
    accuracy phase (module doc)."""
    cls = sampler_class(variant)
    kwargs = VARIANTS[variant]
    for ex in execs:
        await ex.empty()
    await asyncio.sleep(1.0)  # stubs of the unloads gone, servers idle
    pids = {ex.name: ex.server.pid or 0 for ex in execs}
    idle = {ex: processes.memory(pid).pss_bytes for ex, pid in pids.items()}
    for ex in execs:
        await ex.fill()
    await asyncio.sleep(0.5)
    # The sampler lives exactly the measured phase (its idle figures given: read above, idle),
    # so its whole CPU time (initial and final full refresh included) is the phase's cost.
    breakdown = Breakdown(cls, set(pids.values())).install()
    try:
        cpu0 = time.thread_time()  # the event-loop thread's CPU, for comparison
        events0 = sum(ex.events for ex in execs)
        sampler = cls(pids, idle_bytes=idle, **kwargs).start()
        began = time.monotonic()
        period = 2.0 * in_flight / events_per_s  # one switch = two events, per switching loop

        async def drive(ex: Executor, k: int) -> None:
            nxt = time.monotonic() + k * period / in_flight
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            while time.monotonic() - began < seconds:
                await ex.switch(sampler.poke)
                nxt += period
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))

        await asyncio.gather(*(drive(ex, k) for ex in execs for k in range(in_flight)))
        alive = {ex.name: len(processes.model_processes(ex.server.pid or 0)) for ex in execs}
        final = sampler.stop()
        loop_cpu = time.thread_time() - cpu0
        events = sum(ex.events for ex in execs) - events0
    finally:
        breakdown.remove()
    out: dict[str, Any] = {
        "variant": variant,
        "code": f"git {HEAD_REV}" if variant == "head" else "working tree",
        "kwargs": kwargs,
        "seconds": round(final.wall_s, 2),
        "events": events,
        "events_per_s": round(events / final.wall_s, 2),
        "model_processes_at_end": alive,
        "sampler_cpu_s": round(final.cpu_s, 4),
        "sampler_cpu_share_of_one_core": round(final.cpu_share, 5),
        "sampler_cpu_ms_per_event": round(1e3 * final.cpu_s / max(events, 1), 3),
        "cpu_ms_per_event_by_part": {k: round(1e3 * v / max(events, 1), 3) for k, v in sorted(breakdown.cpu.items())},
        "cpu_s_by_part": {k: round(v, 4) for k, v in sorted(breakdown.cpu.items())},
        "calls_by_part": dict(sorted(breakdown.calls.items())),
        "event_loop_thread_cpu_s": round(loop_cpu, 3),
        "load_s_median": round(statistics.median(x for ex in execs for x in ex.load_s[-50:]), 3),
        "pss_reads": final.pss_reads,
        "statm_reads": final.statm_reads,
        "scans": final.scans,
        "poked_steps": final.poked,
        "max_gap_s": round(final.max_gap_s, 3),
        "max_pss_gap_s": round(final.max_pss_gap_s, 3),
        "steps": dict(getattr(final, "steps", {})),
        "step_cpu_ms_per_step": {
            k: round(1e3 * v / max(1, final.steps.get(k, 0)), 3) for k, v in getattr(final, "step_cpu_s", {}).items()
        },
    }
    step_cpu = getattr(final, "step_cpu_s", {})
    if step_cpu and events:
        # A projection, not a measurement: the rate the box could not reach, priced with this
        # run's costs (per event: its poke and unload steps; per second: every other step).
        per_event = (step_cpu.get("poke", 0.0) + step_cpu.get("unload", 0.0)) / events
        per_second = sum(v for k, v in step_cpu.items() if k not in ("poke", "unload")) / final.wall_s
        rate = events_per_s * len(execs)
        out["projected_share_at_target_rate"] = {
            "events_per_s": rate, "share": round(per_second + rate * per_event, 5),
            "event_steps_ms_per_event": round(1e3 * per_event, 3), "other_steps_share": round(per_second, 5),
        }
    if variant != "head":
        out["accuracy"] = await accuracy(cls, kwargs, execs, idle, check_events)
    return out


async def accuracy(
    cls: type[Any], kwargs: dict[str, Any], execs: list[Executor], idle: dict[str, int], n: int
) -> dict[str, Any]:
    """``n`` events, each read by the sampler (``sync``) and compared with a direct PSS read."""
    sampler = cls({ex.name: ex.server.pid or 0 for ex in execs}, idle_bytes=idle, **kwargs).start()
    errors: list[int] = []
    rel: list[float] = []
    try:
        for i in range(n):
            ex = execs[(i // 2) % len(execs)]
            if i % 2 == 0:
                old = ex.resident.popleft()
                await ex.adapter.unload(old)
                ex.pool.append(old)
                event = "unload"
            else:
                new = ex.pool.popleft()
                await ex.adapter.load(new)
                ex.resident.append(new)
                event = "load"
            sampler.poke(event, ex.name, "")
            fp = await asyncio.to_thread(sampler.sync, 5.0)
            assert fp is not None
            direct = direct_figure(ex.server.pid or 0, idle[ex.name])
            got = fp.executor_bytes(ex.name)
            errors.append(got - direct)
            rel.append(abs(got - direct) / direct if direct else 0.0)
    finally:
        sampler.stop()
    return {
        "events": len(errors),
        "max_abs_error_bytes": max((abs(e) for e in errors), default=0),
        "mean_error_bytes": round(statistics.fmean(errors), 1) if errors else 0.0,
        "max_rel_error": round(max(rel, default=0.0), 5),
        "errors_kib": [round(e / 1024) for e in errors],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    repo = Path(args.repo).resolve()
    models = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    if len(models) < args.resident + 2:
        raise SystemExit(f"{repo}: {len(models)} models, need at least --resident + 2 = {args.resident + 2}")
    servers = [EmbeddedTriton(repo) for _ in range(args.executors)]
    execs: list[Executor] = []
    try:
        for s in servers:
            s.start()
        for i, s in enumerate(servers):
            order = models[i * 5 :] + models[: i * 5]  # each executor its own order
            execs.append(Executor(f"cpu{i}", s, order, args.resident))
        out: dict[str, Any] = {
            "machine": machine_description(),
            "command": " ".join(["benchmarks/sampler_cost.py", *args.argv]),
            "repo": str(repo.relative_to(ROOT)) if repo.is_relative_to(ROOT) else str(repo),
            "executors": args.executors,
            "resident_per_executor": args.resident,
            "target_events_per_s_per_executor": args.events_per_s,
            "switches_in_flight_per_executor": args.in_flight,
            "processes_on_box": sum(1 for e in Path("/proc").iterdir() if e.name.isdigit()),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "variants": [],
        }
        for variant in args.variant or ["head", "after", "server-pss", "no-fd-reuse"]:
            r = await run_variant(
                variant, execs, args.seconds, args.events_per_s, args.check_events, args.in_flight
            )
            out["variants"].append(r)
            acc = r.get("accuracy", {"events": 0, "max_abs_error_bytes": 0, "max_rel_error": 0.0})
            print(
                f"{variant:<18} {r['events']} events in {r['seconds']:.0f} s ({r['events_per_s']:.1f}/s), "
                f"processes {r['model_processes_at_end']}: sampler {r['sampler_cpu_share_of_one_core']:.2%} of a core, "
                f"{r['sampler_cpu_ms_per_event']:.2f} ms/event {r['cpu_ms_per_event_by_part']}; "
                f"accuracy over {acc['events']} events: max |err| {acc['max_abs_error_bytes'] / 2**20:.2f} MiB "
                f"({acc['max_rel_error']:.2%})",
                flush=True,
            )
        out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        for ex in execs:
            await ex.empty()
            await ex.adapter.close()
        return out
    finally:
        for s in servers:
            s.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default=str(ROOT / "model_repository"))
    ap.add_argument("--executors", type=int, default=2)
    ap.add_argument("--resident", type=int, default=12, help="experts kept loaded per executor")
    ap.add_argument("--events-per-s", type=float, default=5.8, help="loads + unloads per second per executor")
    ap.add_argument("--in-flight", type=int, default=2,
                    help="switches under way at once per executor (the engine overlaps loads: storage channels 2)")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured time per variant")
    ap.add_argument("--check-events", type=int, default=40, help="events of the accuracy phase per variant")
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/sampler_cost.json"))
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    result = asyncio.run(main_async(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    from orchestrator.cli import run_script  # SIGTERM stops the servers it started, like Ctrl-C

    raise SystemExit(run_script(main))
