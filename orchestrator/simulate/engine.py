"""The discrete-event loop: the core on a simulated clock, costs from a cost profile.

Hardware model: each executor runs one batch at a time (``K*n + B`` seconds, plus the profile's
``first_batch_extra_s`` for the first batch of an expert after its load); loads from disk go
through the box's storage, which runs ``storage.concurrent_loads`` at once, and copies from CPU
memory through the processor's link (``processors.<kind>.concurrent_loads``); more wait in line, FIFO;
an unload frees its memory ``unload_time_s`` after it is issued.

Shared cores (where the profile has ``host.cpu_cores``): loads from disk of architectures with a
measured ``load_cpu_s`` and every batch of a CPU executor are jobs on the host's cores
(``simulate.cpu``: each alone takes what the profile says, a load ``load_time_idle_s`` or else
``load_time_s.disk``; when together they want more cores than the host has, all slow down alike),
instead of taking fixed times that overlap for free; beside each such load the orchestrator's
process watch uses ``load_watch_cores`` for as long as the load lasts, and each unload's
``unload_cpu_s`` (one core at most) takes cores from the rest while its memory comes back after
the fixed ``unload_time_s``. GPU batches and loads without
``load_cpu_s`` keep fixed times. Events at the same instant run in
the order they were scheduled, so a run is a pure function of its inputs.

Start (the same for every policy): ``warmup_tasks`` (default 1) prior tasks drawn from the same mix
with other seeds run first, from an empty box, and only the measured task that follows counts: a
steady state, as on a factory line inspecting board after board. Each task's first request arrives
when the previous task's last request is answered (loads or unloads still in flight carry over:
no policy gets idle time between tasks for free). With ``warmup_tasks=0`` (cold
start) the measured task itself starts from an empty box. Either way the policy's initial placement
(coserve) is issued at the first task's first arrival and its loads are timed like any other.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field, replace

from orchestrator.core.decisions import Complete, Decision, Dispatch, Load, Reject, Unload
from orchestrator.core.policies import PolicySpec
from orchestrator.core.profile import ArchCost, CostProfile
from orchestrator.core.scheduler import CoreScheduler, Request
from orchestrator.core.serve_config import ServeConfig
from orchestrator.simulate.cpu import CpuJob, CpuShare
from orchestrator.simulate.ledger import MemoryLedger
from orchestrator.simulate.workload import Workload, warmup_seed

_ARRIVAL, _LOAD, _UNLOAD, _BATCH, _PHASE, _CPU = 0, 1, 2, 3, 4, 5


@dataclass
class SimResult:
    policy: str
    requests: int
    completed: int
    rejected: dict[int, str]
    makespan_s: float
    throughput_img_s: float
    switches: int
    loads_by_tier: dict[str, int]
    initial_loads: int
    p50_latency_s: float
    p99_latency_s: float
    busy_share: dict[str, float]
    max_wait_s: float
    prefetch_loads: int = 0
    prefetch_hits: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    peak_bytes: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "throughput_img_s": round(self.throughput_img_s, 6),
            "switches": self.switches,
            "p50_latency_s": round(self.p50_latency_s, 6),
            "p99_latency_s": round(self.p99_latency_s, 6),
            "initial_loads": self.initial_loads,
            "loads_by_tier": dict(sorted(self.loads_by_tier.items())),
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for an empty list)."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


class Simulation:
    def __init__(
        self,
        workload: Workload,
        config: ServeConfig,
        profile: CostProfile,
        policy: PolicySpec | str | None = None,
        *,
        warmup_tasks: int = 1,
        unlimited_memory: bool = False,
        oracle_probabilities: bool = False,
        load_failure_rate: float = 0.0,
        failure_seed: int = 0,
        core_class: type[CoreScheduler] = CoreScheduler,
    ) -> None:
        """``warmup_tasks``: prior tasks from the same mix before the measured one (0: cold start).
        ``load_failure_rate``: share of loads that fail (fault injection, drawn from
        ``random.Random(failure_seed)`` in event order: deterministic). ``core_class``: the core to
        drive (tests hand in deliberately broken ones)."""
        if warmup_tasks < 0:
            raise ValueError("warmup_tasks must be >= 0")
        self.workload = workload
        self.warmups = [
            workload.redraw(warmup_seed(workload.seed, i), f"{workload.name}-warmup{i}")
            for i in range(warmup_tasks)
        ]
        self._fail_rate = load_failure_rate
        self._fail_rng = random.Random(failure_seed)
        self.profile = profile
        self.graph = workload.graph()
        self.core = core_class(self.graph, config, profile, policy, unlimited_memory=unlimited_memory)
        self.oracle = oracle_probabilities
        self._events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._channels: dict[tuple[str, str], int] = {}
        self._waiting: dict[tuple[str, str], deque[Load]] = {}
        self.now = 0.0
        cores = profile.host_cpu_cores
        self.cpu: CpuShare | None = CpuShare(cores) if cores else None
        self._cpu_gen = 0  # a _CPU event of an older generation is stale (rates changed since)
        #: (executor, expert) loaded whose first batch has not run yet (it pays first_batch_extra_s)
        self._fresh: set[tuple[str, str]] = set()
        self._watches: dict[int, CpuJob] = {}  # id(Load) -> the process watch beside it
        names = self.core.executor_names()
        self.ledger = MemoryLedger({n: self.core.pool(n).budget_bytes for n in names})
        self._verdicts: dict[int, bool] = {}
        self._stage_done: dict[int, int] = {}
        self._open = 0  # requests of the current task without a Complete or Reject yet
        self._reset_measurement()

    def _reset_measurement(self) -> None:
        self.busy: dict[str, float] = {n: 0.0 for n in self.core.executor_names()}
        self.done_at: dict[int, float] = {}
        self.rejected: dict[int, str] = {}
        self.arrival: dict[int, float] = {}
        self.loads_by_tier: dict[str, int] = {}
        self.subsequent_run: set[int] = set()  # requests whose subsequent (detector) step ran
        self._stage_done = {}
        self.core.stats.reset()
        self.ledger.reset_peaks()
        self.initial_resident = self.ledger.resident()

    @property
    def violations(self) -> list[str]:
        return self.ledger.violations

    # ---- event plumbing ------------------------------------------------------------------
    def _push(self, t: float, kind: int, data: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, data))

    def _cost(self, expert: str, executor: str) -> ArchCost:
        c = self.profile.cost(self.graph.arch(expert), self.core.executor_kind(executor))
        assert c is not None, f"{expert} cannot run on {executor}"
        return c

    def _load_time(self, d: Load) -> float:
        c = self._cost(d.expert, d.executor)
        return c.load_time_s.get(d.tier, c.load_time_s["disk"])

    def _channel(self, d: Load) -> tuple[str, str]:
        """Disk loads of every executor share the box's storage; copies from CPU memory go
        through the processor's own link."""
        if d.tier == "disk":
            return ("storage", "disk")
        return (self.core.executor_kind(d.executor), d.tier)

    def _limit(self, d: Load) -> int:
        if d.tier == "disk":
            return self.profile.storage_concurrent_loads
        return self.profile.processor(self.core.executor_kind(d.executor)).concurrent_loads

    def _start_load(self, d: Load) -> None:
        c = self._cost(d.expert, d.executor)
        if self.cpu is not None and d.tier == "disk" and c.load_cpu_s:
            alone = c.load_time_idle_s or c.load_time_s["disk"]
            # the watch's cores come off the load's own cap: alone the two together take ``alone``
            watch = min(c.load_watch_cores or 0.0, self.cpu.cores / 2)
            cap = min(self.cpu.cores - watch, c.load_cpu_s / max(alone, 1e-9))
            self.cpu.add(self.now, c.load_cpu_s, max(cap, 1e-6), d)
            if watch > 0:
                self._watches[id(d)] = self.cpu.add(self.now, float("inf"), watch, ("watch", d))
            self._cpu_reschedule()
        else:
            self._push(self.now + self._load_time(d), _LOAD, d)

    def _cpu_reschedule(self) -> None:
        """The rates changed: the pending _CPU event is stale; push one for the next job's end."""
        assert self.cpu is not None
        self._cpu_gen += 1
        end = self.cpu.next_end()
        if end is not None:
            self._push(end, _CPU, self._cpu_gen)

    def _execute(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Load):
                self.ledger.load(d.executor, d.expert, d.bytes, self.now)
                self.loads_by_tier[d.tier] = self.loads_by_tier.get(d.tier, 0) + 1
                ch = self._channel(d)
                if self._channels.get(ch, 0) < self._limit(d):
                    self._channels[ch] = self._channels.get(ch, 0) + 1
                    self._start_load(d)
                else:
                    self._waiting.setdefault(ch, deque()).append(d)
            elif isinstance(d, Unload):
                self._fresh.discard((d.executor, d.expert))
                self.ledger.unload(d.executor, d.expert, self.now)
                kind = self.core.executor_kind(d.executor)
                spec = self.profile.processor(kind)
                self._push(self.now + spec.unload_time_s, _UNLOAD, d)
                if self.cpu is not None and spec.unload_cpu_s:
                    # the exit's CPU work takes cores from the rest; the memory is back after
                    # unload_time_s whatever the contention (it was measured so)
                    self.cpu.add(self.now, spec.unload_cpu_s, 1.0, ("unload", d))
                    self._cpu_reschedule()
            elif isinstance(d, Dispatch):
                c = self._cost(d.expert, d.executor)
                n = len(d.request_ids)
                self.ledger.dispatch(d.executor, d.expert, c.activation_bytes_per_item * n, self.now)
                dur = c.batch_time_s(n)
                if (d.executor, d.expert) in self._fresh:
                    self._fresh.discard((d.executor, d.expert))
                    dur += c.first_batch_extra_s or 0.0
                for rid in d.request_ids:
                    if d.stage == 1:
                        if self._stage_done.get(rid, -1) < 0:
                            self.violations.append(
                                f"request {rid}: subsequent step before its preliminary step"
                            )
                        self.subsequent_run.add(rid)
                if self.cpu is not None and self.core.executor_kind(d.executor) == "cpu":
                    self.cpu.add(self.now, dur, 1.0, d)  # one intra-op thread: one core at most
                    self._cpu_reschedule()
                else:
                    self.busy[d.executor] += dur
                    self._push(self.now + dur, _BATCH, d)
            elif isinstance(d, Complete):
                self.done_at[d.request_id] = self.now
                self._open -= 1
            elif isinstance(d, Reject):
                self.rejected[d.request_id] = d.reason
                self._open -= 1

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> SimResult:
        tasks = [*self.warmups, self.workload]
        t = 0.0
        for k, wl in enumerate(tasks):
            self.now = t
            measured = k == len(tasks) - 1
            if measured:
                self._reset_measurement()
            if k == 0:  # the policy's placement, timed like any other load
                self._execute(self.core.initial_placement(t))
            offset = t - (wl.requests[0].arrival_s if wl.requests else 0.0)
            for r in wl.requests:
                shifted = replace(r, arrival_s=r.arrival_s + offset)
                if measured:
                    self.arrival[r.id] = shifted.arrival_s
                self._push(shifted.arrival_s, _ARRIVAL, shifted)
            if measured and self.oracle:
                for start, probs in wl.phases[1:]:
                    at = wl.requests[min(start, len(wl.requests) - 1)].arrival_s + offset
                    self._push(at, _PHASE, probs)
            self._verdicts = wl.verdicts
            self._open = len(wl.requests)
            self._drain(until_answered=not measured)
            t = self.now
        return self._result()

    def _drain(self, until_answered: bool = False) -> None:
        """Run events; with ``until_answered``, stop once every request of the task has its
        Complete or Reject (loads and unloads still in flight carry over into the next task)."""
        core = self.core
        while self._events and not (until_answered and self._open == 0):
            t, _, kind, data = heapq.heappop(self._events)
            self.now = t
            if kind == _ARRIVAL:
                assert isinstance(data, Request)
                self._execute(core.on_arrival(data, t))
            elif kind == _LOAD:
                assert isinstance(data, Load)
                self._load_done(data, t)
            elif kind == _UNLOAD:
                assert isinstance(data, Unload)
                self.ledger.unload_done(data.executor, data.expert)
                self._execute(core.on_unload_done(data.executor, data.expert, t))
            elif kind == _BATCH:
                assert isinstance(data, Dispatch)
                self._batch_done(data, t)
            elif kind == _CPU:
                assert self.cpu is not None
                if data != self._cpu_gen:
                    continue  # stale: a job started or ended after it was pushed
                for job in self.cpu.pop_done(t):
                    if isinstance(job.payload, Load):
                        watch = self._watches.pop(id(job.payload), None)
                        if watch is not None:
                            self.cpu.remove(t, watch)
                        self._load_done(job.payload, t)
                    elif isinstance(job.payload, Dispatch):
                        self.busy[job.payload.executor] = self.busy.get(job.payload.executor, 0.0) + t - job.started
                        self._batch_done(job.payload, t)
                self._cpu_reschedule()
            elif kind == _PHASE:
                self.graph.set_probabilities(data)  # type: ignore[arg-type]

    def _load_done(self, data: Load, t: float) -> None:
        ch = self._channel(data)
        q = self._waiting.get(ch)
        if q:
            self._start_load(q.popleft())
        else:
            self._channels[ch] -= 1
        ok = not (self._fail_rate and self._fail_rng.random() < self._fail_rate)
        self.ledger.load_done(data.executor, data.expert, ok)
        if ok:
            self._fresh.add((data.executor, data.expert))
        self._execute(self.core.on_load_done(data.executor, data.expert, t, ok=ok))

    def _batch_done(self, data: Dispatch, t: float) -> None:
        c = self._cost(data.expert, data.executor)
        self.ledger.batch_done(data.executor, data.expert, c.activation_bytes_per_item * len(data.request_ids))
        for rid in data.request_ids:
            self._stage_done[rid] = data.stage
        verdicts = {rid: self._verdicts.get(rid, False) for rid in data.request_ids}
        self._execute(self.core.on_batch_done(data.batch_id, t, verdicts))

    def _result(self) -> SimResult:
        wl = self.workload
        core = self.core
        first = min(self.arrival.values(), default=0.0)
        last = max(self.done_at.values(), default=first)
        makespan = max(last - first, 1e-12)
        lat = [self.done_at[r.id] - self.arrival[r.id] for r in wl.requests if r.id in self.done_at]
        st = core.stats
        tiers = dict(sorted(self.loads_by_tier.items()))
        return SimResult(
            policy=core.spec.name,
            requests=len(wl.requests),
            completed=len(self.done_at),
            rejected=dict(self.rejected),
            makespan_s=makespan,
            throughput_img_s=len(self.done_at) / makespan if self.done_at else 0.0,
            switches=tiers.get("disk", 0),
            loads_by_tier=tiers,
            initial_loads=self.initial_resident,
            p50_latency_s=percentile(lat, 50),
            p99_latency_s=percentile(lat, 99),
            busy_share={n: b / makespan for n, b in sorted(self.busy.items())},
            max_wait_s=st.max_wait_s,
            prefetch_loads=st.prefetch_loads,
            prefetch_hits=st.prefetch_hits,
            latencies=lat,
            peak_bytes=dict(sorted(self.ledger.peak.items())),
            violations=list(self.violations),
        )


def simulate(
    workload: Workload,
    config: ServeConfig,
    profile: CostProfile,
    policy: PolicySpec | str | None = None,
    **kw: bool | int | float,
) -> SimResult:
    return Simulation(workload, config, profile, policy, **kw).run()  # type: ignore[arg-type]
