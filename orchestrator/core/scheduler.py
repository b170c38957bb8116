"""The CoServe core: queues, expert management and batching, driven by events, returning decisions.

Driver protocol (the simulator and the Triton engine are both drivers)::

    core = CoreScheduler(graph, config, profile)
    for d in core.initial_placement(now): execute d; then core.on_load_done(...)
    on each arrival:           decisions = core.on_arrival(request, now)
    when a load finishes:      decisions = core.on_load_done(executor, expert, now, ok=True)
    when memory is freed:      decisions = core.on_unload_done(executor, expert, now)
    when a batch finishes:     decisions = core.on_batch_done(batch_id, now, verdicts)

``verdicts`` maps request id -> True when the classifier's result calls for the subsequent
(detector) step ("no defect" on a type routed to a detector). Every request ends in exactly one
``Complete`` or ``Reject``.

Each executor serves its queue in order: the head group's expert is loaded if needed (evicting by
the policy's ranking; unloads are confirmed before the load is issued), then batches of
``min(largest batch that fits free memory, profiled max batch)`` are dispatched, one at a time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.core.decisions import Complete, Decision, Dispatch, Load, Reject, Unload
from orchestrator.core.graph import DependencyGraph
from orchestrator.core.memory import EVICTION_POLICIES, ExpertPool, ExpertState
from orchestrator.core.policies import ASSIGN_POLICIES, PolicySpec, executors_for, get_policy
from orchestrator.core.profile import CostProfile
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig

PREFETCH_MIN_PROB = 0.5
REPLACE_RATIO = 2.0  # online re-placement: a resident expert this many times less likely is swapped
REPLACE_MIN_PROB = 1e-3  # ... for an expert used by at least this share of requests


@dataclass(frozen=True)
class Request:
    id: int
    arrival_s: float
    preliminary: str
    subsequent: str | None = None


@dataclass
class _Step:
    request_id: int
    expert: str
    stage: int
    arrival_s: float
    enqueued_s: float


@dataclass
class _Group:
    expert: str
    steps: deque[_Step]
    switch_pred_s: float
    pred_s: float = 0.0

    def oldest_arrival(self) -> float:
        return min(s.arrival_s for s in self.steps)


@dataclass(frozen=True)
class _Cost:
    k: float
    b: float
    maxb: int
    load: Mapping[str, float]
    bytes: int
    act: int


@dataclass
class _Batch:
    batch_id: int
    executor: int
    expert: str
    steps: list[_Step]
    act_bytes: int


@dataclass
class _Exec:
    idx: int
    cfg: ExecutorConfig
    pool: ExpertPool
    queue: list[_Group] = field(default_factory=list)
    by_expert: dict[str, _Group] = field(default_factory=dict)
    running: _Batch | None = None
    busy_until_pred: float = 0.0
    backlog_s: float = 0.0


@dataclass
class CoreStats:
    loads_by_tier: dict[str, int] = field(default_factory=dict)
    initial_loads: int = 0
    unloads: int = 0
    batches: int = 0
    prefetch_loads: int = 0
    prefetch_hits: int = 0
    replacement_loads: int = 0
    rejected: int = 0
    max_wait_s: float = 0.0


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
        self.spec = get_policy(policy or config.policy) if not isinstance(policy, PolicySpec) else policy
        self.switches = config.switches
        execs, cache_bytes = executors_for(self.spec, config)
        self.unlimited = unlimited_memory
        big = 1 << 62
        self.execs = [
            _Exec(i, e, ExpertPool(e.name, big if unlimited_memory else e.budget_bytes))
            for i, e in enumerate(execs)
        ]
        self.n_executors = len(self.execs)
        self._by_name = {e.cfg.name: e for e in self.execs}
        self.cache: ExpertPool | None = ExpertPool("cpu-cache", cache_bytes) if cache_bytes > 0 else None
        self.evict = EVICTION_POLICIES[self.spec.eviction]()
        self.assign = ASSIGN_POLICIES[self.spec.assign]()
        if self.switches.online_probabilities:
            graph.enable_online(self.switches.online_half_life)
        # GPU executors copy an expert from host memory when a CPU executor already holds it
        self._host_copy = self.spec.host_copy
        self._cpu_execs = [e for e in self.execs if e.cfg.kind == "cpu"]
        self._cost: list[dict[str, _Cost | None]] = [self._costs_for(e.cfg) for e in self.execs]
        self._batches: dict[int, _Batch] = {}
        self._next_batch = 0
        self._requests: dict[int, Request] = {}
        self._prefetched: set[tuple[int, str]] = set()
        self.started = False
        self._now = 0.0  # the latest ``now`` a driver passed in (for cache recency)
        self.stats = CoreStats()

    # ---- setup ---------------------------------------------------------------------------
    def _costs_for(self, cfg: ExecutorConfig) -> dict[str, _Cost | None]:
        out: dict[str, _Cost | None] = {}
        for name in self.graph.experts:
            ac = self.profile.cost(self.graph.arch(name), cfg.kind)
            nbytes = self.graph.bytes(name, cfg.kind)
            if ac is None or nbytes is None:
                out[name] = None
                continue
            out[name] = _Cost(
                ac.k_s, ac.b_s, ac.max_batch, ac.load_time_s, nbytes, ac.activation_bytes_per_item
            )
        return out

    def executor_names(self) -> list[str]:
        return [e.cfg.name for e in self.execs]

    def executor_kind(self, name: str) -> str:
        return self._by_name[name].cfg.kind

    def pool(self, name: str) -> ExpertPool:
        return self._by_name[name].pool

    def initial_placement(self, now: float = 0.0) -> list[Decision]:
        """Loads to run (and confirm) before serving: round-robin by descending usage probability."""
        out: list[Decision] = []
        if self.unlimited:
            for q in self.execs:
                for name in self.graph.experts:
                    c = self._cost[q.idx][name]
                    if c is not None:
                        out.append(self._issue_load(q, name, c, "disk", initial=True))
            return out
        if not self.spec.initial_placement:
            return out
        n = self.n_executors
        # reserve activations for one max batch of the hungriest architecture on each executor
        reserve = [
            max((c.act * c.maxb for c in self._cost[q.idx].values() if c is not None), default=0)
            for q in self.execs
        ]
        cursor = 0
        for name in self.graph.ranked():
            if self.graph.usage_prob(name) <= 0.0:
                continue
            for j in range(n):
                q = self.execs[(cursor + j) % n]
                c = self._cost[q.idx][name]
                if c is None or q.pool.free_bytes - c.bytes < reserve[q.idx]:
                    continue
                out.append(self._issue_load(q, name, c, "disk", initial=True))
                cursor = (cursor + j + 1) % n
                break
        return out

    # ---- predictions used by the makespan assignment --------------------------------
    def predicted_backlog_s(self, q: int, now: float) -> float:
        e = self.execs[q]
        return max(0.0, e.busy_until_pred - now) + e.backlog_s

    def _switch_s(self, q: _Exec, expert: str, c: _Cost) -> float:
        if q.pool.holds(expert):
            return 0.0
        return c.load.get(self._tier(q, expert), c.load["disk"])

    def added_latency_s(self, q: int, expert: str) -> float:
        e = self.execs[q]
        c = self._cost[q][expert]
        assert c is not None
        g = e.by_expert.get(expert)
        if g is not None and self.spec.arrange:
            n = len(g.steps)
            return c.k + (c.b if n % c.maxb == 0 else 0.0)
        if not self.spec.arrange and e.queue and e.queue[-1].expert == expert:
            n = len(e.queue[-1].steps)
            return c.k + (c.b if n % c.maxb == 0 else 0.0)
        return c.k + c.b + self._switch_s(e, expert, c)

    def _group_pred(self, g: _Group, c: _Cost) -> float:
        n = len(g.steps)
        return g.switch_pred_s + c.k * n + c.b * math.ceil(n / c.maxb)

    def _repred(self, q: _Exec, g: _Group) -> None:
        c = self._cost[q.idx][g.expert]
        assert c is not None
        new = self._group_pred(g, c)
        q.backlog_s += new - g.pred_s
        g.pred_s = new

    # ---- events ------------------------------------------------------------------------
    def on_arrival(self, request: Request, now: float) -> list[Decision]:
        out: list[Decision] = []
        self.started = True
        self._now = now
        self._requests[request.id] = request
        self.graph.observe_request()
        touched: set[int] = set()
        self._enqueue(_Step(request.id, request.preliminary, 0, request.arrival_s, now), now, out, touched)
        for q in sorted(touched):
            self._pump(self.execs[q], now, out)
        return out

    def on_load_done(self, executor: str, expert: str, now: float, ok: bool = True) -> list[Decision]:
        q = self._by_name[executor]
        self._now = now
        out: list[Decision] = []
        if ok:
            q.pool.transition(expert, ExpertState.READY)
        else:
            q.pool.transition(expert, ExpertState.FAILED)
            self._prefetched.discard((q.idx, expert))
            g = q.by_expert.get(expert)
            for grp in [x for x in q.queue if x.expert == expert]:
                for s in grp.steps:
                    self._reject(s.request_id, f"loading expert {expert!r} on {executor} failed", out)
                q.queue.remove(grp)
                q.backlog_s -= grp.pred_s
                if g is grp:
                    del q.by_expert[expert]
            q.pool.transition(expert, ExpertState.UNLOADED)
        self._pump(q, now, out)
        return out

    def on_unload_done(self, executor: str, expert: str, now: float) -> list[Decision]:
        q = self._by_name[executor]
        q.pool.transition(expert, ExpertState.UNLOADED)
        out: list[Decision] = []
        self._pump(q, now, out)
        return out

    def on_batch_done(self, batch_id: int, now: float, verdicts: Mapping[int, bool]) -> list[Decision]:
        b = self._batches.pop(batch_id)
        self._now = now
        q = self.execs[b.executor]
        q.pool.unpin(b.expert, now, b.act_bytes)
        q.running = None
        out: list[Decision] = []
        touched: set[int] = {q.idx}
        for s in b.steps:
            req = self._requests[s.request_id]
            if s.stage == 0 and req.subsequent is not None and verdicts.get(s.request_id, False):
                self._enqueue(_Step(req.id, req.subsequent, 1, req.arrival_s, now), now, out, touched)
            else:
                out.append(Complete(req.id))
                del self._requests[req.id]
        # the executor that finished first, then the others that got work
        self._pump(q, now, out)
        for i in sorted(touched - {q.idx}):
            self._pump(self.execs[i], now, out)
        return out

    # ---- internals ----------------------------------------------------------------------
    def _reject(self, rid: int, reason: str, out: list[Decision]) -> None:
        self.stats.rejected += 1
        self._requests.pop(rid, None)
        out.append(Reject(rid, reason))

    def _enqueue(self, step: _Step, now: float, out: list[Decision], touched: set[int]) -> None:
        self.graph.observe_use(step.expert)
        cands = []
        for q in self.execs:
            c = self._cost[q.idx].get(step.expert)
            if c is not None and c.bytes + c.act <= q.pool.budget_bytes:
                cands.append(q.idx)
        if not cands:
            self._reject(
                step.request_id,
                f"expert {step.expert!r} fits no executor (architecture, bytes or budget)",
                out,
            )
            return
        qi = cands[0] if len(cands) == 1 else self.assign.choose(self, step.expert, cands, now)
        q = self.execs[qi]
        touched.add(qi)
        c = self._cost[qi][step.expert]
        assert c is not None
        g: _Group | None = None
        if self.spec.arrange:
            g = q.by_expert.get(step.expert)
        elif q.queue and q.queue[-1].expert == step.expert:
            g = q.queue[-1]
        if g is None:
            g = _Group(step.expert, deque(), self._switch_s(q, step.expert, c))
            q.queue.append(g)
            if self.spec.arrange:
                q.by_expert[step.expert] = g
        g.steps.append(step)
        self._repred(q, g)

    def _tier(self, q: _Exec, expert: str) -> str:
        if q.cfg.kind != "gpu":
            return "disk"
        if self.cache is not None and self.cache.is_ready(expert):
            return "cpu"
        if self._host_copy and any(x.pool.is_ready(expert) for x in self._cpu_execs):
            return "cpu"
        return "disk"

    def _issue_load(
        self, q: _Exec, expert: str, c: _Cost, tier: str, initial: bool = False, prefetch: bool = False
    ) -> Load:
        if tier == "cpu" and "cpu" not in c.load:
            tier = "disk"
        q.pool.transition(expert, ExpertState.LOADING, c.bytes)
        if initial and not self.started:
            self.stats.initial_loads += 1
        else:
            self.stats.loads_by_tier[tier] = self.stats.loads_by_tier.get(tier, 0) + 1
        if self.cache is not None and q.cfg.kind == "gpu":
            if tier == "cpu":
                self.cache.touch(expert, 0.0 if not self.started else self._now)
            else:
                self._cache_insert(expert, c.bytes)
        if prefetch:
            self.stats.prefetch_loads += 1
            self._prefetched.add((q.idx, expert))
        return Load(q.cfg.name, expert, tier, c.bytes, prefetch)

    def _cache_insert(self, expert: str, nbytes: int) -> None:
        cache = self.cache
        assert cache is not None
        if cache.holds(expert) or nbytes > cache.budget_bytes:
            return
        victims = self.evict.victims(cache, self.graph, nbytes)
        if victims is None:
            return
        for v in victims:
            cache.transition(v, ExpertState.UNLOADING)
            cache.transition(v, ExpertState.UNLOADED)
        cache.place(expert, nbytes)
        cache.touch(expert, self._now)

    def _pick(self, q: _Exec, now: float) -> int:
        """The starvation guard: the group holding the oldest step is served next once that step
        (its request's arrival) is older than the bound, or would be by the time the head's next
        batch ends; otherwise the head of the queue."""
        bound = self.switches.starvation_bound_s
        if bound is None or len(q.queue) < 2:
            return 0
        best = 0
        oldest = q.queue[0].oldest_arrival()
        for i in range(1, len(q.queue)):
            a = q.queue[i].oldest_arrival()
            if a < oldest:
                oldest, best = a, i
        if not best:
            return 0
        # look one batch ahead: serving the head first would push the oldest step past the bound
        head = q.queue[0]
        c = self._cost[q.idx][head.expert]
        assert c is not None
        head_s = c.k * min(c.maxb, len(head.steps)) + c.b
        if now - oldest > bound - head_s:
            return best
        return 0

    def _pump(self, q: _Exec, now: float, out: list[Decision]) -> None:
        self._now = now
        while q.running is None:
            if not q.queue:
                if self.switches.online_probabilities and self.started:
                    self._replace_when_idle(q, out)
                return
            gi = self._pick(q, now)
            if gi:
                q.queue.insert(0, q.queue.pop(gi))
            g = q.queue[0]
            e = g.expert
            c = self._cost[q.idx][e]
            assert c is not None
            pool = q.pool
            st = pool.state(e)
            if st is ExpertState.READY:
                if g.switch_pred_s:
                    g.switch_pred_s = 0.0
                    self._repred(q, g)
                n = min(c.maxb, len(g.steps))
                if c.act > 0:
                    fit = pool.free_bytes // c.act
                    if fit < 1:
                        if not self._make_room(q, c.act, {e}, out):
                            self._reject_group(q, g, f"no memory for a batch of {e!r} on {q.cfg.name}", out)
                            continue
                        return
                    n = min(n, int(fit))
                self._dispatch(q, g, n, c, now, out)
                return
            if st in (ExpertState.LOADING, ExpertState.UNLOADING):
                return  # wait for the driver's confirmation
            # unloaded (failed experts are cleaned up in on_load_done)
            need = c.bytes + c.act
            if need > pool.budget_bytes:
                self._reject_group(
                    q, g, f"expert {e!r} ({c.bytes} B) does not fit {q.cfg.name}'s budget", out
                )
                continue
            if pool.free_bytes < need:
                if not self._make_room(q, need, {e}, out):
                    self._reject_group(q, g, f"cannot free memory for {e!r} on {q.cfg.name}", out)
                    continue
                return
            load = self._issue_load(q, e, c, self._tier(q, e))
            out.append(load)
            q.busy_until_pred = now + c.load.get(load.tier, c.load["disk"])
            if g.switch_pred_s:
                g.switch_pred_s = 0.0
                self._repred(q, g)
            return

    def _replace_when_idle(self, q: _Exec, out: list[Decision]) -> None:
        """Placement follows the (online) mix: when the whole box is idle (no queued step, no load
        in flight), an executor loads the likeliest expert no executor holds, evicting its least
        likely ones when they are at least REPLACE_RATIO times less likely. One change at a time."""
        pool = q.pool
        # only while the box is not switching: a proactive load must not delay a demand load
        if any(x.pool.experts_in(ExpertState.LOADING, ExpertState.UNLOADING) for x in self.execs):
            return
        if any(x.queue for x in self.execs):
            return
        best: str | None = None
        for name in self.graph.ranked():
            c = self._cost[q.idx][name]
            if c is None or any(x.pool.holds(name) for x in self.execs):
                continue
            best = name
            break
        if best is None:
            return
        c = self._cost[q.idx][best]
        assert c is not None
        p_best = self.graph.usage_prob(best)
        if p_best <= REPLACE_MIN_PROB:
            return
        reserve = c.act * c.maxb
        if pool.free_bytes - c.bytes >= reserve:
            out.append(self._issue_load(q, best, c, self._tier(q, best)))
            self.stats.replacement_loads += 1
            return
        victims = self.evict.victims(pool, self.graph, c.bytes + reserve, {best})
        if not victims or any(self.graph.usage_prob(v) * REPLACE_RATIO > p_best for v in victims):
            return
        for v in victims:
            pool.transition(v, ExpertState.UNLOADING)
            self.stats.unloads += 1
            out.append(Unload(q.cfg.name, v, "replaced by a likelier expert"))

    def _make_room(self, q: _Exec, need: int, exclude: set[str], out: list[Decision]) -> bool:
        """Issue unloads so ``need`` bytes become free; False if that can never happen."""
        pool = q.pool
        victims = self.evict.victims(pool, self.graph, need, exclude)
        if victims is None:
            # memory held by loads/unloads in flight or pinned batches will come back; wait for it
            pending = pool.experts_in(ExpertState.LOADING, ExpertState.UNLOADING)
            return bool(pending or q.running is not None or pool.activation_bytes)
        for v in victims:
            pool.transition(v, ExpertState.UNLOADING)
            self.stats.unloads += 1
            if self.cache is not None and q.cfg.kind == "gpu":
                self._cache_insert(v, pool.entry_bytes(v))  # an evicted expert stays in host memory
            self._prefetched.discard((q.idx, v))
            out.append(Unload(q.cfg.name, v, "evicted"))
        return True

    def _reject_group(self, q: _Exec, g: _Group, reason: str, out: list[Decision]) -> None:
        q.queue.remove(g)
        q.backlog_s -= g.pred_s
        if q.by_expert.get(g.expert) is g:
            del q.by_expert[g.expert]
        for s in g.steps:
            self._reject(s.request_id, reason, out)

    def _dispatch(self, q: _Exec, g: _Group, n: int, c: _Cost, now: float, out: list[Decision]) -> None:
        steps = [g.steps.popleft() for _ in range(n)]
        for s in steps:
            w = now - s.enqueued_s
            if w > self.stats.max_wait_s:
                self.stats.max_wait_s = w
        if g.steps:
            self._repred(q, g)
        else:
            q.queue.pop(0)
            q.backlog_s -= g.pred_s
            if q.by_expert.get(g.expert) is g:
                del q.by_expert[g.expert]
        self._next_batch += 1
        bid = self._next_batch
        act = c.act * n
        q.pool.pin(g.expert, now, act)
        b = _Batch(bid, q.idx, g.expert, steps, act)
        self._batches[bid] = b
        q.running = b
        q.busy_until_pred = now + c.k * n + c.b
        self.stats.batches += 1
        if (q.idx, g.expert) in self._prefetched:
            self._prefetched.discard((q.idx, g.expert))
            self.stats.prefetch_hits += 1
        out.append(Dispatch(bid, q.cfg.name, g.expert, tuple(s.request_id for s in steps), steps[0].stage))
        if self.switches.prefetch and steps[0].stage == 0:
            self._prefetch(q, g.expert, out)

    def _prefetch(self, q: _Exec, expert: str, out: list[Decision]) -> None:
        """Load the likely subsequent expert of ``expert`` into free memory of ``q`` while the
        preliminary batch runs, so its step finds it resident (no eviction is ever done for it)."""
        for d, p in self.graph.successors(expert):
            if p < PREFETCH_MIN_PROB:
                break
            if q.pool.state(d) is not ExpertState.UNLOADED:
                continue
            c = self._cost[q.idx].get(d)
            if c is None:
                continue
            if q.pool.free_bytes - c.bytes >= c.act:
                out.append(self._issue_load(q, d, c, self._tier(q, d), prefetch=True))

    # ---- introspection for tests and reports ---------------------------------------------
    def queued_steps(self) -> int:
        return sum(len(g.steps) for q in self.execs for g in q.queue)

    def running_batches(self) -> int:
        return len(self._batches)
