"""Expert residency: an explicit state machine per expert, pools with byte budgets, pins, and
pluggable eviction policies.

States and the only legal transitions::

    UNLOADED -> LOADING -> READY -> UNLOADING -> UNLOADED
                LOADING -> FAILED -> UNLOADED | LOADING (retry)

LOADING and UNLOADING experts count against the budget until the driver confirms them; an expert
with a running batch is pinned and never chosen for eviction.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.core.graph import DependencyGraph


class ExpertState(enum.Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"


ALLOWED: dict[ExpertState, frozenset[ExpertState]] = {
    ExpertState.UNLOADED: frozenset({ExpertState.LOADING}),
    ExpertState.LOADING: frozenset({ExpertState.READY, ExpertState.FAILED}),
    ExpertState.READY: frozenset({ExpertState.UNLOADING}),
    ExpertState.UNLOADING: frozenset({ExpertState.UNLOADED}),
    ExpertState.FAILED: frozenset({ExpertState.UNLOADED, ExpertState.LOADING}),
}

_HOLDS_MEMORY = (ExpertState.LOADING, ExpertState.READY, ExpertState.UNLOADING)


class IllegalTransitionError(RuntimeError):
    """A state change the machine does not allow (a bug in a driver or the core)."""


class BudgetExceededError(RuntimeError):
    """Memory would exceed the pool's budget (a bug: the core must check before loading)."""


@dataclass
class _Entry:
    state: ExpertState
    bytes: int
    loaded_seq: int = 0
    last_used_s: float = float("-inf")


class ExpertPool:
    """One executor's (or the CPU cache tier's) model pool."""

    def __init__(self, name: str, budget_bytes: int) -> None:
        self.name = name
        self.budget_bytes = int(budget_bytes)
        self._entries: dict[str, _Entry] = {}
        self._pins: dict[str, int] = {}
        self.weight_bytes = 0
        self.activation_bytes = 0
        #: measured memory the entries' figures do not account for (``set_unattributed``)
        self.unattributed_bytes = 0
        self._accounted_at_reading = 0  # weights + activations when the excess was read
        self._seq = 0
        self.peak_bytes = 0

    # ---- queries ---------------------------------------------------------------------
    def state(self, expert: str) -> ExpertState:
        e = self._entries.get(expert)
        return ExpertState.UNLOADED if e is None else e.state

    def is_ready(self, expert: str) -> bool:
        e = self._entries.get(expert)
        return e is not None and e.state is ExpertState.READY

    def holds(self, expert: str) -> bool:
        """Ready or loading (a switch to it is already paid for)."""
        e = self._entries.get(expert)
        return e is not None and e.state in (ExpertState.READY, ExpertState.LOADING)

    @property
    def used_bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes + self.unattributed_bytes

    @property
    def free_bytes(self) -> int:
        return self.budget_bytes - self.used_bytes

    def experts_in(self, *states: ExpertState) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.state in states)

    def resident(self) -> list[str]:
        return self.experts_in(ExpertState.READY, ExpertState.LOADING)

    def entry_bytes(self, expert: str) -> int:
        return self._entries[expert].bytes

    def last_used_s(self, expert: str) -> float:
        return self._entries[expert].last_used_s

    def loaded_seq(self, expert: str) -> int:
        return self._entries[expert].loaded_seq

    def pinned(self, expert: str) -> bool:
        return self._pins.get(expert, 0) > 0

    # ---- transitions -----------------------------------------------------------------
    def transition(self, expert: str, new: ExpertState, nbytes: int | None = None) -> None:
        e = self._entries.get(expert)
        old = ExpertState.UNLOADED if e is None else e.state
        if new not in ALLOWED[old]:
            raise IllegalTransitionError(
                f"{self.name}: expert {expert!r} cannot go {old.value} -> {new.value}"
            )
        if new is ExpertState.UNLOADING and self.pinned(expert):
            raise IllegalTransitionError(
                f"{self.name}: expert {expert!r} is pinned (in use) and cannot be unloaded"
            )
        if new is ExpertState.LOADING:
            size = nbytes if nbytes is not None else (e.bytes if e is not None else None)
            if size is None:
                raise ValueError("loading needs the expert's bytes")
            if self.used_bytes + size > self.budget_bytes:
                raise BudgetExceededError(
                    f"{self.name}: loading {expert!r} ({size} B) exceeds budget {self.budget_bytes} B "
                    f"(used {self.used_bytes} B)"
                )
            self._seq += 1
            self._entries[expert] = _Entry(ExpertState.LOADING, size, loaded_seq=self._seq)
            self.weight_bytes += size
        else:
            assert e is not None
            held_before = old in _HOLDS_MEMORY
            held_after = new in _HOLDS_MEMORY
            e.state = new
            if held_before and not held_after:
                self.weight_bytes -= e.bytes
            if new is ExpertState.UNLOADED:
                del self._entries[expert]
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)

    def place(self, expert: str, nbytes: int) -> None:
        """Make ``expert`` READY at once (UNLOADED -> LOADING -> READY), counting ``nbytes``.

        For a pool whose loads need no driver confirmation: the core calls it only for the CPU
        cache tier (``CoreScheduler._cache_insert``), which caches an expert when a GPU executor
        loads it from disk or evicts it. Executor pools never use it: their loads, the initial
        placement included, go LOADING when issued and READY when the driver calls ``on_load_done``
        (tests use it to set up a pool). Raises like ``transition`` (``IllegalTransitionError``,
        ``BudgetExceededError``).
        """
        self.transition(expert, ExpertState.LOADING, nbytes)
        self.transition(expert, ExpertState.READY)

    def set_unattributed(self, nbytes: int) -> None:
        """Count ``nbytes`` (>= 0; less is 0) of measured memory that no entry's figure covers
        (an expert larger than its profile said, a server grown more than profiled). It may put
        the pool over its budget (``free_bytes`` < 0): its owner then evicts, and nothing new
        is admitted until the pool fits again."""
        self.unattributed_bytes = max(0, int(nbytes))
        self._accounted_at_reading = self.weight_bytes + self.activation_bytes
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)

    @property
    def excess_may_shrink(self) -> bool:
        """A measured excess is counted that was read while the entries held more than they hold
        now: the next reading may find less (an expert larger than its profile said has left)."""
        return self.unattributed_bytes > 0 and self.weight_bytes + self.activation_bytes < self._accounted_at_reading

    # ---- pins and activation memory --------------------------------------------------
    def pin(self, expert: str, now: float, activation_bytes: int = 0) -> None:
        if not self.is_ready(expert):
            raise IllegalTransitionError(
                f"{self.name}: cannot run {expert!r} in state {self.state(expert).value}"
            )
        if self.used_bytes + activation_bytes > self.budget_bytes:
            raise BudgetExceededError(f"{self.name}: batch activations ({activation_bytes} B) exceed budget")
        self._pins[expert] = self._pins.get(expert, 0) + 1
        self.activation_bytes += activation_bytes
        self._entries[expert].last_used_s = now
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)

    def unpin(self, expert: str, now: float, activation_bytes: int = 0) -> None:
        n = self._pins.get(expert, 0)
        if n <= 0:
            raise IllegalTransitionError(f"{self.name}: expert {expert!r} is not pinned")
        if n == 1:
            del self._pins[expert]
        else:
            self._pins[expert] = n - 1
        self.activation_bytes -= activation_bytes
        if expert in self._entries:
            self._entries[expert].last_used_s = now

    def touch(self, expert: str, now: float) -> None:
        if expert in self._entries:
            self._entries[expert].last_used_s = now

    def evictable(self, exclude: Iterable[str] = ()) -> list[str]:
        ex = set(exclude)
        return sorted(
            n
            for n, e in self._entries.items()
            if e.state is ExpertState.READY and n not in ex and not self.pinned(n)
        )


# ---- eviction policies ----------------------------------------------------------------

RankKey = tuple[float, ...]


class EvictionPolicy:
    """Ranks an unpinned, ready expert of a pool: lower keys are evicted first."""

    name = "base"

    def rank(self, expert: str, pool: ExpertPool, graph: DependencyGraph) -> RankKey:
        raise NotImplementedError

    def victims(
        self,
        pool: ExpertPool,
        graph: DependencyGraph,
        need_bytes: int,
        exclude: Iterable[str] = (),
        needed: Mapping[str, float] | None = None,
        elsewhere: Set[str] | None = None,
    ) -> list[str] | None:
        """Experts to unload so that ``need_bytes`` more fit, or None if impossible right now.

        ``needed`` (queue-aware eviction): expert -> seconds until a queued step needs it. Experts
        no queued step needs go first, in this policy's order; the needed ones only after them,
        the one needed last first (Belady's rule over the known queue). ``elsewhere`` (duplicate-
        first eviction): experts another executor of the box also holds; among the experts no
        queued step needs they go first (the box keeps them), then the rest in this policy's
        order; the needed ones stay in Belady's order."""
        shortfall = need_bytes - pool.free_bytes
        if shortfall <= 0:
            return []
        cands = pool.evictable(exclude)
        if elsewhere is not None:
            dup = elsewhere
            need = needed or {}
            cands.sort(
                key=lambda n: (
                    (1.0, -need[n], n not in dup, n)
                    if n in need
                    else (0.0, n not in dup, *self.rank(n, pool, graph), n)
                )
            )
        elif needed:
            cands.sort(
                key=lambda n: (1.0, -needed[n], n) if n in needed else (0.0, *self.rank(n, pool, graph), n)
            )
        else:
            cands.sort(key=lambda n: (*self.rank(n, pool, graph), n))
        out: list[str] = []
        freed = 0
        for n in cands:
            if freed >= shortfall:
                break
            out.append(n)
            freed += pool.entry_bytes(n)
        return out if freed >= shortfall else None


class LRUEviction(EvictionPolicy):
    name = "lru"

    def rank(self, expert: str, pool: ExpertPool, graph: DependencyGraph) -> RankKey:
        return (pool.last_used_s(expert),)


class FIFOEviction(EvictionPolicy):
    name = "fifo"

    def rank(self, expert: str, pool: ExpertPool, graph: DependencyGraph) -> RankKey:
        return (float(pool.loaded_seq(expert)),)


class UsageEviction(EvictionPolicy):
    """Ascending usage probability (the paper's stage 2 alone)."""

    name = "usage"

    def rank(self, expert: str, pool: ExpertPool, graph: DependencyGraph) -> RankKey:
        return (graph.usage_prob(expert),)


class TwoStageEviction(EvictionPolicy):
    """The paper's dependency-aware eviction.

    Stage 1: subsequent experts none of whose preliminary experts is resident in this pool, largest
    first. Stage 2: everything else by ascending usage probability.
    """

    name = "two-stage"

    def rank(self, expert: str, pool: ExpertPool, graph: DependencyGraph) -> RankKey:
        preds = graph.predecessors(expert)
        if preds and not any(pool.holds(p) for p in preds):
            return (0.0, -float(pool.entry_bytes(expert)))
        return (1.0, graph.usage_prob(expert))


EVICTION_POLICIES: dict[str, Callable[[], EvictionPolicy]] = {}


def register_eviction(name: str, factory: Callable[[], EvictionPolicy]) -> None:
    EVICTION_POLICIES[name] = factory


for _cls in (LRUEviction, FIFOEviction, UsageEviction, TwoStageEviction):
    register_eviction(_cls.name, _cls)
