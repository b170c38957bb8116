"""The CoServe scheduler: composes the executor queues, the expert manager and the policies, and
speaks the driver protocol (``orchestrator.core`` documents it).

Each executor serves its queue in order: the head group's expert is loaded if needed (the expert
manager admits the load, evicting by the policy's ranking; unloads are confirmed before the load
is issued), then batches of ``min(largest batch that fits free memory, profiled max batch)`` are
dispatched, one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.core.assign import ASSIGN_POLICIES
from orchestrator.core.costs import CostTable, ExpertCost, cost_table
from orchestrator.core.decisions import Complete, Decision, Dispatch, Reject
from orchestrator.core.executor_queue import ExecutorQueue, Group, Step, join_cost_s
from orchestrator.core.expert_manager import AllocStatus, ExpertManager
from orchestrator.core.features import with_flags
from orchestrator.core.graph import DependencyGraph
from orchestrator.core.layout import executors_for
from orchestrator.core.memory import EVICTION_POLICIES, ExpertPool, ExpertState
from orchestrator.core.placement import batch_reserve, idle_replacement, initial_placement, place_everything
from orchestrator.core.policies import PolicySpec, get_policy
from orchestrator.core.profile import PROCESSOR_KINDS, CostProfile
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.core.stats import CoreStats

PREFETCH_MIN_PROB = 0.5
LOOKAHEAD_GROUPS = 8  # queued groups (the head included) looked at for loads ahead / ready groups
HEADROOM_MIN_RATIO = 0.5  # eviction headroom acts where unloads take >= this x the fastest load


def _deadline(request: Request) -> float:
    return math.inf if request.deadline_s is None else request.deadline_s


def headroom_bytes(costs: CostTable, unload_s: float) -> int:
    """Memory to keep free (or coming back) on an executor so that a load never waits for a slow
    unload: its largest expert plus one max batch of activations; 0 where unloads are fast
    against loads (shorter than HEADROOM_MIN_RATIO x its fastest disk load: the loads evictions
    make room for)."""
    runnable = [c for c in costs.values() if c is not None]
    if not runnable:
        return 0
    fastest = min(c.load["disk"] for c in runnable)
    if unload_s < HEADROOM_MIN_RATIO * fastest:
        return 0
    return max(c.bytes for c in runnable) + batch_reserve(costs)


def load_slots(profile: CostProfile) -> dict[tuple[str, str], int]:
    """Loads the box runs at once per channel: every disk load shares the storage; copies from
    host memory go through each processor kind's link."""
    slots = {("storage", "disk"): profile.storage_concurrent_loads}
    for kind in PROCESSOR_KINDS:
        slots[(kind, "cpu")] = profile.processor(kind).concurrent_loads
    return slots


__all__ = ["CoreScheduler", "CoreStats", "Request"]


@dataclass(frozen=True)
class Request:
    id: int
    arrival_s: float
    preliminary: str
    subsequent: str | None = None
    #: when its caller stops waiting, on the core's clock (None: no deadline): queues serve the
    #: group of a step about to miss it first (``ExecutorQueue.select_head``)
    deadline_s: float | None = None


@dataclass
class _Batch:
    batch_id: int
    executor: int
    expert: str
    steps: list[Step]
    act_bytes: int


@dataclass
class _Executor:
    idx: int
    cfg: ExecutorConfig
    costs: CostTable
    queue: ExecutorQueue
    running: _Batch | None = None


class _LoadView:
    """The ``ExecutorLoad`` view assignment policies get: queue predictions only."""

    __slots__ = ("_core",)

    def __init__(self, core: CoreScheduler) -> None:
        self._core = core

    @property
    def n_executors(self) -> int:
        return self._core.n_executors

    def predicted_backlog_s(self, q: int, now: float) -> float:
        return self._core.predicted_backlog_s(q, now)

    def added_latency_s(self, q: int, expert: str) -> float:
        return self._core.added_latency_s(q, expert)


class CoreScheduler:
    def __init__(
        self,
        graph: DependencyGraph,
        config: ServeConfig,
        profile: CostProfile,
        policy: PolicySpec | str | None = None,
        *,
        unlimited_memory: bool = False,
    ) -> None:
        self.graph = graph
        self.profile = profile
        self.spec = policy if isinstance(policy, PolicySpec) else get_policy(policy or config.policy)
        self.features = with_flags(config.features, self.spec.features)
        # the feature's loads ahead pay only where no two executors compete for a disk load slot
        execs_n = len(executors_for(self.spec, config)[0])
        self._strict_ahead = (
            not self.spec.lookahead
            and self.features.lookahead_loading
            and execs_n <= profile.storage_concurrent_loads
        )
        self._lookahead = self.spec.lookahead or self._strict_ahead
        # serving ready groups early is for arranged queues, and gives way to loads ahead where
        # those run: there the executor's wait for a load is already filled by loading the next
        # groups' experts, whose free memory an early batch's activations would take (measured:
        # -20% on one executor at 40 ms with both on, docs/simulator.md)
        self._serve_resident = self.features.serve_resident and self.spec.arrange and not self._strict_ahead
        execs, cache_bytes = executors_for(self.spec, config)
        self.unlimited = unlimited_memory
        self.stats = CoreStats()
        tables = [cost_table(graph, profile, e.kind) for e in execs]
        headroom = [
            headroom_bytes(table, profile.processor(e.kind).unload_time_s)
            if self.features.unload_headroom
            else 0
            for table, e in zip(tables, execs, strict=True)
        ]
        self.experts = ExpertManager(
            graph,
            [(e.name, e.kind, e.budget_bytes) for e in execs],
            tables,
            cache_bytes,
            EVICTION_POLICIES[self.spec.eviction](),
            self.stats,
            host_copy=self.spec.host_copy,
            load_slots=load_slots(profile),
            unlimited=unlimited_memory,
            needed=self._needed if self.features.queue_aware_eviction else None,
            # the feature counts memory on its way back on every executor: even a 29 ms unload
            # (the embedded server's fast release) spans several 4 ms arrivals, and the paper's
            # core chooses another victim at each of them (bench board: 105 -> 92 switches)
            count_returning=self.features.unload_headroom,
            dedup=self.features.dedup_eviction,
        )
        self._reserve = [batch_reserve(table) for table in tables]
        self._headroom = headroom
        self.execs = [
            _Executor(i, e, tables[i], ExecutorQueue(tables[i], self.spec.arrange))
            for i, e in enumerate(execs)
        ]
        self.n_executors = len(self.execs)
        self._by_name = {e.cfg.name: e for e in self.execs}
        self.assign = ASSIGN_POLICIES[self.spec.assign]()
        self._load_view = _LoadView(self)
        if self.features.online_probabilities:
            graph.enable_online(self.features.online_half_life)
        self._batches: dict[int, _Batch] = {}
        self._next_batch = 0
        self._requests: dict[int, Request] = {}
        #: (executor index, expert) to unload once its running batch ends: a new version of
        #: the expert is on disk (``refresh``)
        self._stale: set[tuple[int, str]] = set()
        self.started = False

    # ---- introspection ---------------------------------------------------------------------
    @property
    def cache(self) -> ExpertPool | None:
        return self.experts.cache

    def executor_names(self) -> list[str]:
        return [e.cfg.name for e in self.execs]

    def executor_kind(self, name: str) -> str:
        return self._by_name[name].cfg.kind

    def pool(self, name: str) -> ExpertPool:
        return self.experts.pools[self._by_name[name].idx]

    def queued_steps(self) -> int:
        return sum(x.queue.steps() for x in self.execs)

    def queued_steps_on(self, name: str) -> int:
        """Steps waiting in one executor's queue (for status reports)."""
        return self._by_name[name].queue.steps()

    def running_batches(self) -> int:
        return len(self._batches)

    # ---- setup -----------------------------------------------------------------------------
    def initial_placement(self, now: float = 0.0) -> list[Decision]:
        """Loads to run (and confirm) before serving: round-robin by descending usage probability
        (every expert everywhere with unlimited memory; none for policies without placement)."""
        tables = [x.costs for x in self.execs]
        if self.unlimited:
            return place_everything(self.experts, tables, now)
        if not self.spec.initial_placement:
            return []
        return initial_placement(self.graph, self.experts, tables, now)

    # ---- the ExecutorLoad view (predictions used by the makespan assignment) ----------------
    def predicted_backlog_s(self, q: int, now: float) -> float:
        return self.execs[q].queue.predicted_backlog_s(now)

    def added_latency_s(self, q: int, expert: str) -> float:
        x = self.execs[q]
        c = x.costs[expert]
        assert c is not None
        g = x.queue.joinable(expert)
        if g is not None:
            return join_cost_s(g, c)
        switch = self.experts.switch_s(q, expert, c)
        if self.features.disk_aware_assign and switch and self.experts.tier(q, expert) == "disk":
            switch += self.experts.disk_wait_s(c)
        return c.k + c.b + switch

    # ---- events ------------------------------------------------------------------------------
    def on_arrival(self, request: Request, now: float) -> list[Decision]:
        out: list[Decision] = []
        self.started = True
        self._requests[request.id] = request
        self.graph.observe_request()
        touched: set[int] = set()
        step = Step(request.id, request.preliminary, 0, request.arrival_s, now, _deadline(request))
        self._enqueue(step, now, out, touched)
        for q in sorted(touched):
            self._pump(self.execs[q], now, out)
        return out

    def on_load_done(self, executor: str, expert: str, now: float, ok: bool = True) -> list[Decision]:
        x = self._by_name[executor]
        out: list[Decision] = []
        self.experts.load_done(x.idx, expert, ok, now)
        if not ok:
            for g in [g for g in x.queue.groups if g.expert == expert]:
                x.queue.remove(g)
                for s in g.steps:
                    self._reject(s.request_id, f"loading expert {expert!r} on {executor} failed", out)
        self._pump(x, now, out)
        if self._lookahead:  # a load slot of the box came free: others may load ahead now
            for other in self.execs:
                if other is not x:
                    self._load_ahead(other, now, out)
        return out

    def on_unload_done(self, executor: str, expert: str, now: float) -> list[Decision]:
        x = self._by_name[executor]
        self.experts.unload_done(x.idx, expert)
        out: list[Decision] = []
        self._pump(x, now, out)
        return out

    def on_batch_done(self, batch_id: int, now: float, verdicts: Mapping[int, bool]) -> list[Decision]:
        b = self._batches.pop(batch_id)
        x = self.execs[b.executor]
        self.experts.pools[x.idx].unpin(b.expert, now, b.act_bytes)
        x.running = None
        out: list[Decision] = []
        if (x.idx, b.expert) in self._stale:  # refresh() waited for this batch
            out.extend(self.refresh(x.cfg.name, b.expert, now))
        touched: set[int] = {x.idx}
        for s in b.steps:
            req = self._requests.get(s.request_id)
            if req is None:  # withdrawn while its batch ran: no subsequent step, no Complete
                continue
            if s.stage == 0 and req.subsequent is not None and verdicts.get(s.request_id, False):
                step = Step(req.id, req.subsequent, 1, req.arrival_s, now, _deadline(req))
                self._enqueue(step, now, out, touched)
            else:
                out.append(Complete(req.id))
                del self._requests[req.id]
        # the executor that finished first, then the others that got work
        self._pump(x, now, out)
        for i in sorted(touched - {x.idx}):
            self._pump(self.execs[i], now, out)
        return out

    def refresh(self, executor: str, expert: str, now: float) -> list[Decision]:
        """A new version of ``expert`` is on disk (or an older one is again the newest): the copy
        ``executor`` holds is to go, so that its next load takes the version now on disk. Ready
        and idle: an ``Unload`` now (its bytes stay counted until confirmed, and the expert is
        loaded again only when a queued step needs it: never two copies at once). Running a
        batch: the unload follows that batch (requests already running finish on the old
        version; queued ones run on the new). Loading, unloading or not held: nothing (the driver
        asks again once the load is done: it knows which version that load took)."""
        x = self._by_name[executor]
        pool = self.experts.pools[x.idx]
        out: list[Decision] = []
        if pool.state(expert) is not ExpertState.READY:
            return out
        if pool.pinned(expert):
            self._stale.add((x.idx, expert))
            return out
        self._stale.discard((x.idx, expert))
        out.append(self.experts.unload(x.idx, expert, "a new version is on disk", now))
        return out

    def correct_footprint(self, executor: str, excess_bytes: int, now: float) -> list[Decision]:
        """The driver measured ``executor``'s memory and found ``excess_bytes`` more than the
        core accounts for it (its experts' figures, the running batches' activations): the
        budget is a promise about the measured footprint, so the excess is counted against it
        (``ExpertPool.set_unattributed``; a new measurement replaces it, <= 0 clears it). Where
        that puts the pool over its budget, idle experts are evicted by the policy's ranking
        (queue-aware where that is on) until it fits, or every idle one if that is not enough
        (batches running free the rest when they end; nothing is admitted meanwhile).

        A reading that gives memory back, or that replaces an excess a step may be waiting on
        (``ExpertManager.admit`` answers LATER, not NEVER, while an excess read with more experts
        held is counted), serves the queue when no load or unload is in flight on the executor
        (whose confirmation would serve it anyway): the step then loads, or is rejected if the
        memory stayed. Only then: serving a waiting head again while its victims unload would
        choose more victims where returning bytes are not counted."""
        x = self._by_name[executor]
        pool = self.experts.pools[x.idx]
        before, awaited = pool.unattributed_bytes, pool.excess_may_shrink
        pool.set_unattributed(excess_bytes)
        out: list[Decision] = []
        if pool.free_bytes >= 0:
            settles = pool.unattributed_bytes < before or awaited
            if settles and not pool.experts_in(ExpertState.LOADING, ExpertState.UNLOADING):
                self._pump(x, now, out)
            return out
        victims = self.experts.victims(x.idx, 0, ())
        for v in victims if victims is not None else pool.evictable():
            out.append(self.experts.unload(x.idx, v, "evicted: the measured footprint was over the budget", now))
            self.stats.footprint_evictions += 1
        return out

    def withdraw(self, request_id: int, now: float) -> list[Decision]:
        """The caller gave up on ``request_id`` (it went away, or its deadline passed): its queued
        step leaves its queue (and its group, once empty: an expert no one waits for is not
        loaded for it), a batch already running for it is left to finish but no subsequent step
        follows, and no ``Complete`` or ``Reject`` is sent for it. An unknown id (already
        answered, or withdrawn) is ignored."""
        out: list[Decision] = []
        if self._requests.pop(request_id, None) is None:
            return out
        self.stats.withdrawn += 1
        for x in self.execs:
            if x.queue.discard(request_id):
                self._pump(x, now, out)  # the head may have changed
                break
        return out

    # ---- internals -----------------------------------------------------------------------------
    def _reject(self, rid: int, reason: str, out: list[Decision]) -> None:
        self.stats.rejected += 1
        self._requests.pop(rid, None)
        out.append(Reject(rid, reason))

    def _enqueue(self, step: Step, now: float, out: list[Decision], touched: set[int]) -> None:
        self.graph.observe_use(step.expert)
        cands = []
        for x in self.execs:
            c = x.costs.get(step.expert)
            if c is not None and c.bytes + c.act <= self.experts.pools[x.idx].budget_bytes:
                cands.append(x.idx)
        if not cands:
            self._reject(
                step.request_id,
                f"expert {step.expert!r} fits no executor (architecture, bytes or budget)",
                out,
            )
            return
        qi = cands[0] if len(cands) == 1 else self.assign.choose(self._load_view, step.expert, cands, now)
        x = self.execs[qi]
        touched.add(qi)
        c = x.costs[step.expert]
        assert c is not None
        g = x.queue.joinable(step.expert)
        x.queue.add(step, self.experts.switch_s(qi, step.expert, c) if g is None else 0.0)

    def _pump(self, x: _Executor, now: float, out: list[Decision]) -> None:
        """Serve executor ``x``'s queue until it runs a batch or waits for memory or a load; then,
        with lookahead, load the experts of the groups behind the head."""
        self._serve(x, now, out)
        if self._lookahead:
            self._load_ahead(x, now, out)
        if self._headroom[x.idx]:
            self._keep_headroom(x, now, out)

    def _serve(self, x: _Executor, now: float, out: list[Decision]) -> None:
        pool = self.experts.pools[x.idx]
        while x.running is None:
            if not x.queue:
                if (
                    self.features.online_probabilities
                    and self.started
                    and not any(e.queue for e in self.execs)
                ):
                    out.extend(idle_replacement(self.graph, self.experts, x.costs, x.idx, now))
                return
            g = x.queue.select_head(now, self.features.starvation_bound_s)
            e = g.expert
            c = x.costs[e]
            assert c is not None
            st = pool.state(e)
            if st is ExpertState.READY:
                x.queue.switch_issued(g)
                n = min(c.maxb, len(g.steps))
                if c.act > 0:
                    status = self.experts.admit(x.idx, c.act, {e}, x.running is not None, now, out)
                    if status is AllocStatus.NEVER:
                        self._reject_group(x, g, f"no memory for a batch of {e!r} on {x.cfg.name}", out)
                        continue
                    if status is AllocStatus.LATER:
                        return
                    want = n
                    n = min(n, pool.free_bytes // c.act)
                    if self.features.batch_room and n < want:
                        self._make_batch_room(x, e, (want - n) * c.act, now, out)
                self._dispatch(x, g, n, c, now, out)
                return
            if st in (ExpertState.LOADING, ExpertState.UNLOADING):
                if st is ExpertState.LOADING and self._serve_resident:
                    self._serve_ready(x, g, now, out)
                return  # wait for the driver's confirmation
            # unloaded (failed experts are cleaned up in on_load_done)
            need = c.bytes + c.act
            if need > pool.budget_bytes:
                self._reject_group(
                    x, g, f"expert {e!r} ({c.bytes} B) does not fit {x.cfg.name}'s budget", out
                )
                continue
            status = self.experts.admit(x.idx, need, {e}, x.running is not None, now, out)
            if status is AllocStatus.NEVER:
                self._reject_group(x, g, f"cannot free memory for {e!r} on {x.cfg.name}", out)
                continue
            if status is AllocStatus.LATER:
                return
            load = self.experts.load(x.idx, e, c, self.experts.tier(x.idx, e), now)
            out.append(load)
            x.queue.busy_until_pred = now + c.load_s(load.tier)
            x.queue.switch_issued(g)
            return

    def _load_ahead(self, x: _Executor, now: float, out: list[Decision]) -> None:
        """While ``x`` runs a batch or its head's expert loads, load the experts of the next queued
        groups (distinct, in queue order, up to LOOKAHEAD_GROUPS groups) whenever the box has a free
        load slot for the tier, keeping one max batch of activations free. Victims are chosen by
        the policy's ranking but never among the experts of the groups up to that one, nor among
        experts already loaded ahead; the load follows once their unloads are confirmed. Queue
        order of service is unchanged.

        Samba-CoE's rule (``PolicySpec.lookahead``) runs as said. The feature
        ``lookahead_loading`` is stricter: it never evicts an expert any queued step needs (on a
        CPU executor: nor one a GPU executor's queue would copy from it), and it runs only where
        the box has no more executors than disk load slots. Where executors share a saturated
        disk, a load ahead for one delays the next demand load of another and evicts earlier,
        knowing less: measured -4% to -15% on the paper tasks (docs/simulator.md)."""
        pool = self.experts.pools[x.idx]
        if not x.queue or not (
            x.running is not None or pool.state(x.queue.groups[0].expert) is ExpertState.LOADING
        ):
            return
        protect = self.experts.ahead_of_use(x.idx)
        reserve = self._reserve[x.idx] + self._headroom[x.idx]  # leave the headroom free too
        for j, g in enumerate(x.queue.groups[:LOOKAHEAD_GROUPS]):
            e = g.expert
            protect.add(e)
            if j == 0 or pool.state(e) is not ExpertState.UNLOADED:
                continue
            c = x.costs[e]
            assert c is not None
            tier = self.experts.load_tier(x.idx, e, c)
            need = c.bytes + reserve
            if not self.experts.slot_free(x.idx, tier) or need > pool.budget_bytes:
                continue
            if pool.free_bytes < need:
                if self.experts.unloading_bytes(x.idx):
                    return  # evicted already: the load follows once the memory is back
                if self._strict_ahead:
                    protect |= set(self._needed(x.idx))
                victims = self.experts.victims(x.idx, need, protect)
                if victims:
                    for v in victims:
                        out.append(self.experts.unload(x.idx, v, "evicted to load ahead", now))
                return
            out.append(self.experts.load(x.idx, e, c, tier, now, ahead=True))
            x.queue.switch_issued(g)

    def _serve_ready(self, x: _Executor, head: Group, now: float, out: list[Decision]) -> None:
        """Feature ``serve_resident``: while the head's expert loads, run one batch of the first
        queued group (within LOOKAHEAD_GROUPS) whose expert is ready and whose activations fit
        the free memory (nothing is evicted or loaded for it, so each queued expert is still
        loaded at most once). With the starvation guard on, only if the batch ends before the
        head's load is predicted to, or the head's oldest step stays within the bound."""
        pool = self.experts.pools[x.idx]
        bound = self.features.starvation_bound_s
        for g in x.queue.groups[1:LOOKAHEAD_GROUPS]:
            if not pool.is_ready(g.expert):
                continue
            c = x.costs[g.expert]
            assert c is not None
            n = min(c.maxb, len(g.steps))
            if c.act > 0:
                n = min(n, pool.free_bytes // c.act)
            if n < 1:
                continue
            if bound is not None:
                end = now + c.k * n + c.b
                hc = x.costs[head.expert]
                assert hc is not None
                head_batch = hc.k * min(hc.maxb, len(head.steps)) + hc.b
                if end > x.queue.busy_until_pred and end + head_batch - head.oldest_arrival() > bound:
                    continue
            self._dispatch(x, g, n, c, now, out)
            return

    def _keep_headroom(self, x: _Executor, now: float, out: list[Decision]) -> None:
        """Feature ``unload_headroom``: where unloads are slow against loads, keep the executor's
        headroom (its largest expert + one max batch) free or on its way back by evicting ahead,
        so that the next load never waits for an unload. Only while steps are queued; victims by
        the eviction policy but never an expert a queued step needs or one loaded ahead."""
        if not x.queue:
            return  # no load is coming: nothing to keep room for (and idle re-placement may fill it)
        pool = self.experts.pools[x.idx]
        coming = pool.free_bytes + self.experts.unloading_bytes(x.idx)
        want = self._headroom[x.idx]
        if coming >= want:
            return
        # never a victim a queued step needs (it would be loaded again): only spare experts
        keep = set(self._needed(x.idx)) | self.experts.ahead_of_use(x.idx)
        victims = self.experts.victims(x.idx, want - coming + pool.free_bytes, keep)
        for v in victims or ():
            out.append(self.experts.unload(x.idx, v, "evicted ahead (slow unloads)", now))

    def _make_batch_room(
        self, x: _Executor, expert: str, short: int, now: float, out: list[Decision]
    ) -> None:
        """Feature ``batch_room``: the head's batch of ``expert`` is ``short`` bytes of activations
        below a full one (memory holds experts instead); evict experts no queued step needs (nor
        one loaded ahead), in the eviction policy's order, so that the next batch is full. Only if
        they free all of it, and not while an unload is in flight there (it may be the room)."""
        if self.experts.unloading_bytes(x.idx):
            return
        pool = self.experts.pools[x.idx]
        # the needed test per resident expert (O(1) through the arranged queues' group index)
        # rather than the whole needed map: this runs at every batch cut short
        keep = self.experts.ahead_of_use(x.idx) | {expert}
        spare = pool.evictable(keep)
        needed = {e for e in spare if self._queued_for(x.idx, e)}
        if len(needed) < len(spare):
            for v in self.experts.spare_victims(x.idx, pool.free_bytes + short, keep | needed) or ():
                out.append(self.experts.unload(x.idx, v, "evicted for a full batch", now))

    def _queued_for(self, i: int, expert: str) -> bool:
        """A queued step needs ``expert`` on executor ``i`` (``_needed``'s keys, one expert)."""
        host = self.execs[i].cfg.kind == "cpu"
        for x in self.execs:
            own = x.idx == i
            if not own and not (host and x.cfg.kind == "gpu"):
                continue
            if not own and self.experts.pools[x.idx].holds(expert):
                continue
            if x.queue.arrange:
                if expert in x.queue.by_expert:
                    return True
            elif any(g.expert == expert for g in x.queue.groups):
                return True
        return False

    def _needed(self, i: int) -> dict[str, float]:
        """Queue-aware eviction on executor ``i``: expert -> predicted seconds of queued work
        before a step needs it, over ``i``'s queue; for a CPU executor also over the GPU
        executors' queues that would copy the expert from its host memory."""
        out: dict[str, float] = {}
        host = self.execs[i].cfg.kind == "cpu"
        for x in self.execs:
            own = x.idx == i
            if not own and not (host and x.cfg.kind == "gpu"):
                continue
            pool = self.experts.pools[x.idx]
            for e, t in x.queue.needed_after():
                if (own or not pool.holds(e)) and t < out.get(e, float("inf")):
                    out[e] = t
        return out

    def _reject_group(self, x: _Executor, g: Group, reason: str, out: list[Decision]) -> None:
        x.queue.remove(g)
        for s in g.steps:
            self._reject(s.request_id, reason, out)

    def _dispatch(
        self, x: _Executor, g: Group, n: int, c: ExpertCost, now: float, out: list[Decision]
    ) -> None:
        steps = x.queue.take(g, n)
        for s in steps:
            w = now - s.enqueued_s
            if w > self.stats.max_wait_s:
                self.stats.max_wait_s = w
        self._next_batch += 1
        bid = self._next_batch
        act = c.act * n
        self.experts.pools[x.idx].pin(g.expert, now, act)
        b = _Batch(bid, x.idx, g.expert, steps, act)
        self._batches[bid] = b
        x.running = b
        # a batch run while the head's expert loads does not hide the rest of the load
        x.queue.busy_until_pred = max(x.queue.busy_until_pred, now + c.k * n + c.b)
        self.stats.batches += 1
        self.experts.used(x.idx, g.expert)
        out.append(Dispatch(bid, x.cfg.name, g.expert, tuple(s.request_id for s in steps), steps[0].stage))
        if self.features.prefetch and steps[0].stage == 0:
            self._prefetch(x, g.expert, now, out)

    def _prefetch(self, x: _Executor, expert: str, now: float, out: list[Decision]) -> None:
        """Load the likely subsequent expert of ``expert`` into free memory of ``x`` while the
        preliminary batch runs, so its step finds it resident (no eviction is ever done for it)."""
        pool = self.experts.pools[x.idx]
        for d, p in self.graph.successors(expert):
            if p < PREFETCH_MIN_PROB:
                break
            if pool.state(d) is not ExpertState.UNLOADED:
                continue
            c = x.costs.get(d)
            if c is None:
                continue
            if pool.free_bytes - c.bytes >= c.act:
                out.append(self.experts.load(x.idx, d, c, self.experts.tier(x.idx, d), now, prefetch=True))
