"""The discrete-event loop: the core on a simulated clock, costs from a cost profile.

Hardware model: each executor runs one batch at a time (``K*n + B`` seconds); loads from disk go
through the box's storage, which runs ``storage.concurrent_loads`` at once, and copies from CPU
memory through the processor's link (``processors.<kind>.concurrent_loads``); more wait in line, FIFO;
an unload frees its memory ``unload_time_s`` after it is issued. Events at the same instant run in
the order they were scheduled, so a run is a pure function of its inputs.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field

from orchestrator.core.decisions import Complete, Decision, Dispatch, Load, Reject, Unload
from orchestrator.core.policies import PolicySpec
from orchestrator.core.profile import CostProfile
from orchestrator.core.scheduler import CoreScheduler
from orchestrator.core.serve_config import ServeConfig
from orchestrator.simulate.workload import Workload

_ARRIVAL, _LOAD, _UNLOAD, _BATCH, _PHASE = 0, 1, 2, 3, 4


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
        unlimited_memory: bool = False,
        oracle_probabilities: bool = False,
        check_invariants: bool = False,
        load_failure_rate: float = 0.0,
        failure_seed: int = 0,
    ) -> None:
        """``load_failure_rate``: share of loads after the first arrival that fail (fault
        injection, drawn from ``random.Random(failure_seed)`` in event order: deterministic)."""
        self.workload = workload
        self._fail_rate = load_failure_rate
        self._fail_rng = random.Random(failure_seed)
        self.profile = profile
        self.graph = workload.graph()
        self.core = CoreScheduler(self.graph, config, profile, policy, unlimited_memory=unlimited_memory)
        self.oracle = oracle_probabilities
        self.check = check_invariants
        self._events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._channels: dict[tuple[str, str], int] = {}
        self._waiting: dict[tuple[str, str], deque[Load]] = {}
        self.now = 0.0
        self.busy: dict[str, float] = {n: 0.0 for n in self.core.executor_names()}
        self.done_at: dict[int, float] = {}
        self.rejected: dict[int, str] = {}
        self._req_stage_done: dict[int, int] = {}
        self._running: dict[tuple[str, str], int] = {}
        self.violations: list[str] = []

    # ---- event plumbing ------------------------------------------------------------------
    def _push(self, t: float, kind: int, data: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, data))

    def _load_time(self, d: Load) -> float:
        kind = self.core.executor_kind(d.executor)
        c = self.profile.cost(self.graph.arch(d.expert), kind)
        assert c is not None
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
        self._push(self.now + self._load_time(d), _LOAD, d)

    def _execute(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Load):
                ch = self._channel(d)
                limit = self._limit(d)
                if self._channels.get(ch, 0) < limit:
                    self._channels[ch] = self._channels.get(ch, 0) + 1
                    self._start_load(d)
                else:
                    self._waiting.setdefault(ch, deque()).append(d)
            elif isinstance(d, Unload):
                if self.check and self._running.get((d.executor, d.expert), 0) > 0:
                    self.violations.append(f"{d.expert} evicted from {d.executor} while a batch runs on it")
                kind = self.core.executor_kind(d.executor)
                self._push(self.now + self.profile.processor(kind).unload_time_s, _UNLOAD, d)
            elif isinstance(d, Dispatch):
                kind = self.core.executor_kind(d.executor)
                c = self.profile.cost(self.graph.arch(d.expert), kind)
                assert c is not None
                dur = c.batch_time_s(len(d.request_ids))
                self.busy[d.executor] += dur
                key = (d.executor, d.expert)
                self._running[key] = self._running.get(key, 0) + 1
                if self.check:
                    for rid in d.request_ids:
                        if d.stage == 1 and self._req_stage_done.get(rid, -1) < 0:
                            self.violations.append(
                                f"request {rid}: subsequent step before its preliminary step"
                            )
                self._push(self.now + dur, _BATCH, d)
            elif isinstance(d, Complete):
                self.done_at[d.request_id] = self.now
            elif isinstance(d, Reject):
                self.rejected[d.request_id] = d.reason
        if self.check:
            self._check_budgets()

    def _check_budgets(self) -> None:
        for name in self.core.executor_names():
            p = self.core.pool(name)
            if p.used_bytes > p.budget_bytes:
                self.violations.append(
                    f"{name}: {p.used_bytes} B used > budget {p.budget_bytes} B at {self.now}"
                )
        cache = self.core.cache
        if cache is not None and cache.used_bytes > cache.budget_bytes:
            self.violations.append(f"cpu cache over budget at {self.now}")

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> SimResult:
        core = self.core
        for d in core.initial_placement(0.0):
            assert isinstance(d, Load)
            self._execute(core.on_load_done(d.executor, d.expert, 0.0))
        wl = self.workload
        for r in wl.requests:
            self._push(r.arrival_s, _ARRIVAL, r)
        if self.oracle:
            for start, probs in wl.phases[1:]:
                self._push(wl.requests[min(start, len(wl.requests) - 1)].arrival_s, _PHASE, probs)
        while self._events:
            t, _, kind, data = heapq.heappop(self._events)
            self.now = t
            if kind == _ARRIVAL:
                self._execute(core.on_arrival(data, t))  # type: ignore[arg-type]
            elif kind == _LOAD:
                assert isinstance(data, Load)
                ch = self._channel(data)
                q = self._waiting.get(ch)
                if q:
                    self._start_load(q.popleft())
                else:
                    self._channels[ch] -= 1
                ok = not (self._fail_rate and self._fail_rng.random() < self._fail_rate)
                self._execute(core.on_load_done(data.executor, data.expert, t, ok=ok))
            elif kind == _UNLOAD:
                assert isinstance(data, Unload)
                self._execute(core.on_unload_done(data.executor, data.expert, t))
            elif kind == _BATCH:
                assert isinstance(data, Dispatch)
                verdicts = {rid: wl.verdicts.get(rid, False) for rid in data.request_ids}
                self._running[(data.executor, data.expert)] -= 1
                if self.check:
                    if core.pool(data.executor).state(data.expert).value != "ready":
                        self.violations.append(f"{data.expert} not ready while running on {data.executor}")
                    for rid in data.request_ids:
                        self._req_stage_done[rid] = data.stage
                self._execute(core.on_batch_done(data.batch_id, t, verdicts))
            elif kind == _PHASE:
                self.graph.set_probabilities(data)  # type: ignore[arg-type]
        return self._result()

    def _result(self) -> SimResult:
        wl = self.workload
        core = self.core
        first = wl.requests[0].arrival_s if wl.requests else 0.0
        last = max(self.done_at.values(), default=first)
        makespan = max(last - first, 1e-12)
        lat = [self.done_at[r.id] - r.arrival_s for r in wl.requests if r.id in self.done_at]
        st = core.stats
        tiers = dict(sorted(st.loads_by_tier.items()))
        return SimResult(
            policy=core.spec.name,
            requests=len(wl.requests),
            completed=len(self.done_at),
            rejected=dict(self.rejected),
            makespan_s=makespan,
            throughput_img_s=len(self.done_at) / makespan if self.done_at else 0.0,
            switches=tiers.get("disk", 0),
            loads_by_tier=tiers,
            initial_loads=st.initial_loads,
            p50_latency_s=percentile(lat, 50),
            p99_latency_s=percentile(lat, 99),
            busy_share={n: b / makespan for n, b in sorted(self.busy.items())},
            max_wait_s=st.max_wait_s,
            prefetch_loads=st.prefetch_loads,
            prefetch_hits=st.prefetch_hits,
            latencies=lat,
            peak_bytes={n: core.pool(n).peak_bytes for n in core.executor_names()},
            violations=list(self.violations),
        )


def simulate(
    workload: Workload,
    config: ServeConfig,
    profile: CostProfile,
    policy: PolicySpec | str | None = None,
    **kw: bool,
) -> SimResult:
    return Simulation(workload, config, profile, policy, **kw).run()
