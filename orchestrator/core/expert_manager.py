"""The expert manager: where experts live and what loading one costs.

It owns one ``ExpertPool`` per executor plus the CPU cache tier, chooses the tier a load comes
from, and answers the one question the scheduler asks before loading (like vLLM's block manager
answering ``AllocStatus``): can ``need`` bytes be had on this executor

- ``OK``: now (they are free),
- ``LATER``: once memory in flight comes back (unloads it has just issued for victims chosen by
  the eviction policy, loads, unloads or batches already running),
- ``NEVER``: not while the executor holds what it holds (nothing can be evicted or will return).

It issues the ``Load``/``Unload`` decisions and counts them; it never decides what to serve.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence

from orchestrator.core.costs import CostTable, ExpertCost
from orchestrator.core.decisions import Decision, Load, Unload
from orchestrator.core.graph import DependencyGraph
from orchestrator.core.memory import EvictionPolicy, ExpertPool, ExpertState
from orchestrator.core.stats import CoreStats

UNLIMITED_BYTES = 1 << 62


class AllocStatus(enum.Enum):
    OK = "ok"
    LATER = "later"
    NEVER = "never"


class ExpertManager:
    def __init__(
        self,
        graph: DependencyGraph,
        executors: Sequence[tuple[str, str, int]],
        costs: Sequence[CostTable],
        cache_bytes: int,
        eviction: EvictionPolicy,
        stats: CoreStats,
        *,
        host_copy: bool,
        load_slots: Mapping[tuple[str, str], int] | None = None,
        unlimited: bool = False,
        needed: Callable[[int], Mapping[str, float]] | None = None,
        count_returning: bool = False,
        dedup: bool = False,
    ) -> None:
        """``executors``: (name, kind, budget bytes) each; ``costs`` their cost tables, in order.
        ``load_slots``: loads the box runs at once per channel, ("storage", "disk") for every disk
        load and (kind, "cpu") for copies from host memory to executors of that kind (missing: 1).
        ``unlimited``: every pool has (practically) unlimited memory (the all-resident replay).
        ``needed`` (queue-aware eviction): executor -> {expert: seconds until a queued step needs
        it}; victims are chosen around them (``EvictionPolicy.victims``), and experts loaded ahead
        get no extra protection (their queue position is their protection). ``count_returning``:
        on every executor, memory whose unload is in flight counts as coming back, so no further
        victims are chosen for what it covers (with slow unloads every event in the window would
        evict another)."""
        self.graph = graph
        self.pools = [ExpertPool(n, UNLIMITED_BYTES if unlimited else b) for n, _, b in executors]
        self.kinds = [k for _, k, _ in executors]
        self.costs = list(costs)
        self.cache: ExpertPool | None = ExpertPool("cpu-cache", cache_bytes) if cache_bytes > 0 else None
        self.eviction = eviction
        self.stats = stats
        # GPU executors copy an expert from host memory when a CPU executor already holds it
        self.host_copy = host_copy
        self._cpu_pools = [p for p, k in zip(self.pools, self.kinds, strict=True) if k == "cpu"]
        self._prefetched: set[tuple[int, str]] = set()
        self._inflight: dict[tuple[int, str], str] = {}  # (executor, expert) -> tier of its load
        self._slots = dict(load_slots or {})
        self._busy: dict[tuple[str, str], int] = {}  # loads in flight per channel
        self._ahead: set[tuple[int, str]] = set()  # loaded ahead of its group, not used yet
        self._needed = needed
        self._count_returning = count_returning
        self._dedup = dedup

    # ---- queries ------------------------------------------------------------------------------
    def tier(self, i: int, expert: str) -> str:
        """Where executor ``i`` would load ``expert`` from: "cpu" (host memory) or "disk"."""
        if self.kinds[i] != "gpu":
            return "disk"
        if self.cache is not None and self.cache.is_ready(expert):
            return "cpu"
        if self.host_copy and any(p.is_ready(expert) for p in self._cpu_pools):
            return "cpu"
        return "disk"

    def switch_s(self, i: int, expert: str, c: ExpertCost) -> float:
        """Predicted load time before executor ``i`` can run ``expert`` (0 if ready or loading)."""
        if self.pools[i].holds(expert):
            return 0.0
        return c.load_s(self.tier(i, expert))

    def disk_wait_s(self, c: ExpertCost) -> float:
        """Predicted seconds a disk load issued now waits for a storage slot: the disk loads in
        flight beyond the free slots, each taken as long as this one, shared by the slots."""
        ch = ("storage", "disk")
        slots = self._slots.get(ch, 1)
        ahead = self._busy.get(ch, 0) - slots + 1
        return ahead * c.load["disk"] / slots if ahead > 0 else 0.0

    def busy_switching(self) -> bool:
        """A load or unload is in flight on some executor."""
        return any(p.experts_in(ExpertState.LOADING, ExpertState.UNLOADING) for p in self.pools)

    def unloading_bytes(self, i: int) -> int:
        """Bytes of executor ``i``'s experts whose unload is in flight."""
        pool = self.pools[i]
        return sum(pool.entry_bytes(e) for e in pool.experts_in(ExpertState.UNLOADING))

    def held_anywhere(self, expert: str) -> bool:
        return any(p.holds(expert) for p in self.pools)

    # ---- admission ----------------------------------------------------------------------------
    def admit(
        self,
        i: int,
        need: int,
        exclude: Iterable[str],
        busy: bool,
        now: float,
        out: list[Decision],
        *,
        spare_ahead: bool = True,
    ) -> AllocStatus:
        """Can ``need`` bytes be had on executor ``i``? On ``LATER`` the unloads of the chosen
        victims (never one of ``exclude``) are appended to ``out``. ``busy``: a batch runs there
        (its memory comes back when it ends). ``spare_ahead``: experts loaded ahead of their group
        and not used yet are evicted only if nothing else can be."""
        pool = self.pools[i]
        if pool.free_bytes >= need:
            return AllocStatus.OK
        if self._count_returning:
            returning = self.unloading_bytes(i)
            if pool.free_bytes + returning >= need:
                return AllocStatus.LATER
            need -= returning
        exclude = set(exclude)
        victims = None
        if spare_ahead and self._ahead and self._needed is None:
            ahead = {e for j, e in self._ahead if j == i}
            if ahead:
                victims = self.victims(i, need, exclude | ahead)
        if victims is None:
            victims = self.victims(i, need, exclude)
        if victims is None:
            # memory held by loads/unloads in flight or pinned batches will come back; wait for it.
            # So may a measured excess read while more experts were held: the driver's next
            # reading replaces it (``CoreScheduler.correct_footprint`` serves the queue then); an
            # excess read with no more held than now stays (a server grown beyond its profile)
            pending = pool.experts_in(ExpertState.LOADING, ExpertState.UNLOADING)
            if pending or busy or pool.activation_bytes or pool.excess_may_shrink:
                return AllocStatus.LATER
            return AllocStatus.NEVER
        for v in victims:
            out.append(self.unload(i, v, "evicted", now))
        return AllocStatus.LATER

    def victims(self, i: int, need: int, exclude: Iterable[str]) -> list[str] | None:
        """The eviction policy's victims on ``i`` for ``need`` bytes (queue-aware when on)."""
        needed = self._needed(i) if self._needed is not None else None
        elsewhere = self.held_elsewhere(i) if self._dedup else None
        return self.eviction.victims(self.pools[i], self.graph, need, exclude, needed, elsewhere)

    def spare_victims(self, i: int, need: int, exclude: Iterable[str]) -> list[str] | None:
        """Victims among experts the caller found no queued step needs (``exclude`` holds the
        others): the eviction policy's order, duplicates first with dedup, no needed map."""
        elsewhere = self.held_elsewhere(i) if self._dedup else None
        return self.eviction.victims(self.pools[i], self.graph, need, exclude, None, elsewhere)

    def held_elsewhere(self, i: int) -> set[str]:
        """Experts ready on executor ``i`` that another executor of the box holds ready too
        (duplicates: evicting one here keeps the expert in the box)."""
        others = [p for j, p in enumerate(self.pools) if j != i]
        return {e for e in self.pools[i].experts_in(ExpertState.READY) if any(p.is_ready(e) for p in others)}

    # ---- decisions ----------------------------------------------------------------------------
    def load(
        self,
        i: int,
        expert: str,
        c: ExpertCost,
        tier: str,
        now: float,
        *,
        initial: bool = False,
        prefetch: bool = False,
        ahead: bool = False,
    ) -> Load:
        """Issue a load (the pool goes LOADING); ``initial``: a placement load before serving;
        ``ahead``: for a queued group behind the head (lookahead)."""
        if tier == "cpu" and "cpu" not in c.load:
            tier = "disk"
        self.pools[i].transition(expert, ExpertState.LOADING, c.bytes)
        ch = self.channel(i, tier)
        self._busy[ch] = self._busy.get(ch, 0) + 1
        if ahead:
            self._ahead.add((i, expert))
        if initial:
            self.stats.initial_loads += 1
        else:
            self.stats.loads_by_tier[tier] = self.stats.loads_by_tier.get(tier, 0) + 1
        self._inflight[(i, expert)] = tier
        if self.cache is not None and self.kinds[i] == "gpu":
            if tier == "cpu":
                self.cache.touch(expert, now)
            else:
                self._cache_reserve(expert, c.bytes, now)
        if prefetch:
            self.stats.prefetch_loads += 1
            self._prefetched.add((i, expert))
        return Load(self.pools[i].name, expert, tier, c.bytes, prefetch)

    def unload(self, i: int, expert: str, reason: str, now: float) -> Unload:
        """Issue an unload (the pool goes UNLOADING); a GPU executor's evicted expert stays in the
        CPU cache tier when there is one."""
        pool = self.pools[i]
        pool.transition(expert, ExpertState.UNLOADING)
        self.stats.unloads += 1
        if self.cache is not None and self.kinds[i] == "gpu":
            self._cache_insert(expert, pool.entry_bytes(expert), now)
        self._prefetched.discard((i, expert))
        self._ahead.discard((i, expert))
        return Unload(pool.name, expert, reason)

    def _cache_room(self, expert: str, nbytes: int) -> bool:
        """Make room for ``expert`` in the cache tier (dropping its victims at once: host memory
        needs no confirmation); False if it is there already or cannot fit."""
        cache = self.cache
        assert cache is not None
        if cache.holds(expert) or nbytes > cache.budget_bytes:
            return False
        victims = self.eviction.victims(cache, self.graph, nbytes)
        if victims is None:
            return False
        for v in victims:
            cache.transition(v, ExpertState.UNLOADING)
            cache.transition(v, ExpertState.UNLOADED)
        return True

    def _cache_insert(self, expert: str, nbytes: int, now: float) -> None:
        """An expert evicted from a GPU executor stays in host memory (ready at once)."""
        cache = self.cache
        assert cache is not None
        if self._cache_room(expert, nbytes):
            cache.place(expert, nbytes)
            cache.touch(expert, now)

    def _cache_reserve(self, expert: str, nbytes: int, now: float) -> None:
        """A GPU executor's disk load passes through host memory: the cache holds the expert once
        the read is done (LOADING until then, so no other executor copies it from host memory
        before it is there)."""
        cache = self.cache
        assert cache is not None
        if self._cache_room(expert, nbytes):
            cache.transition(expert, ExpertState.LOADING, nbytes)
            cache.touch(expert, now)

    def _cache_loaded(self, expert: str, nbytes: int, ok: bool, now: float) -> None:
        cache = self.cache
        assert cache is not None
        st = cache.state(expert)
        if ok:
            if st is ExpertState.LOADING:
                cache.transition(expert, ExpertState.READY)
            elif st is ExpertState.UNLOADED:
                self._cache_insert(expert, nbytes, now)
            return
        still_reading = any(e == expert and t == "disk" for (_, e), t in self._inflight.items())
        if st is ExpertState.LOADING and not still_reading:
            cache.transition(expert, ExpertState.FAILED)
            cache.transition(expert, ExpertState.UNLOADED)

    # ---- in-flight loads ------------------------------------------------------------------------
    def loading_tier(self, i: int, expert: str) -> str | None:
        """The tier of executor ``i``'s load of ``expert`` in flight (None: none)."""
        return self._inflight.get((i, expert))

    def loads_in_flight(self) -> int:
        return len(self._inflight)

    def load_tier(self, i: int, expert: str, c: ExpertCost) -> str:
        """The tier a load of ``expert`` onto ``i`` would come from now (as ``load`` resolves it)."""
        tier = self.tier(i, expert)
        return "disk" if tier == "cpu" and "cpu" not in c.load else tier

    def channel(self, i: int, tier: str) -> tuple[str, str]:
        """Disk loads share the box's storage; copies from host memory the processor's link."""
        return ("storage", "disk") if tier == "disk" else (self.kinds[i], tier)

    def slot_free(self, i: int, tier: str) -> bool:
        """A load onto ``i`` from ``tier`` would start at once (the box's channel has a free slot)."""
        ch = self.channel(i, tier)
        return self._busy.get(ch, 0) < self._slots.get(ch, 1)

    def ahead_of_use(self, i: int) -> set[str]:
        """Experts of ``i`` loaded ahead of their group and not used yet."""
        return {e for j, e in self._ahead if j == i}

    # ---- driver confirmations -----------------------------------------------------------------
    def load_done(self, i: int, expert: str, ok: bool, now: float) -> None:
        """A load finished (``ok``) or failed. A loaded expert counts as used now (recency)."""
        pool = self.pools[i]
        tier = self._inflight.pop((i, expert), None)
        if tier is not None:
            self._busy[self.channel(i, tier)] -= 1
        if self.cache is not None and self.kinds[i] == "gpu" and tier == "disk":
            self._cache_loaded(expert, pool.entry_bytes(expert), ok, now)
        if ok:
            pool.transition(expert, ExpertState.READY)
            pool.touch(expert, now)
            return
        pool.transition(expert, ExpertState.FAILED)
        self._prefetched.discard((i, expert))
        self._ahead.discard((i, expert))
        pool.transition(expert, ExpertState.UNLOADED)

    def unload_done(self, i: int, expert: str) -> None:
        self.pools[i].transition(expert, ExpertState.UNLOADED)

    def used(self, i: int, expert: str) -> None:
        """A batch of ``expert`` was dispatched on ``i`` (a prefetched expert counts as a hit)."""
        self._ahead.discard((i, expert))
        if (i, expert) in self._prefetched:
            self._prefetched.discard((i, expert))
            self.stats.prefetch_hits += 1
