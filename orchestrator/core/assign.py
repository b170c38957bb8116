"""Assignment policies: which executor's queue a new step joins.

A policy sees only ``ExecutorLoad``, a narrow read-only view of the executors' load (how many
there are, each one's predicted backlog, and the latency a step for an expert would add to it),
never the scheduler itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class ExecutorLoad(Protocol):
    """What an assignment policy may know about the executors."""

    @property
    def n_executors(self) -> int: ...

    def predicted_backlog_s(self, q: int, now: float) -> float:
        """Seconds of work predicted on executor ``q`` from ``now`` (running batch + queue)."""
        ...

    def added_latency_s(self, q: int, expert: str) -> float:
        """Seconds one more step for ``expert`` would add to executor ``q``'s backlog."""
        ...


class AssignPolicy:
    """Chooses the queue for a new step among the executors able to run its expert."""

    name = "base"

    def choose(self, load: ExecutorLoad, expert: str, candidates: Sequence[int], now: float) -> int:
        """One of ``candidates`` (executor indices, ascending, never empty)."""
        raise NotImplementedError


class RoundRobinAssign(AssignPolicy):
    """Deal steps to executors in turn (skipping those that cannot run the expert)."""

    name = "round-robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, load: ExecutorLoad, expert: str, candidates: Sequence[int], now: float) -> int:
        n = load.n_executors
        cset = set(candidates)
        for j in range(n):
            q = (self._next + j) % n
            if q in cset:
                self._next = q + 1
                return q
        return candidates[0]


class MakespanAssign(AssignPolicy):
    """The paper: minimise the predicted makespan (the maximum backlog over all queues once the
    step is added); ties to the smallest added latency, then the lowest index."""

    name = "makespan"

    def choose(self, load: ExecutorLoad, expert: str, candidates: Sequence[int], now: float) -> int:
        loads = [load.predicted_backlog_s(q, now) for q in range(load.n_executors)]
        # top two for "max over the other queues"
        best1 = best2 = 0.0
        arg1 = -1
        for q, t in enumerate(loads):
            if t > best1:
                best2, best1, arg1 = best1, t, q
            elif t > best2:
                best2 = t
        choice = candidates[0]
        key: tuple[float, float, int] | None = None
        for q in candidates:
            added = load.added_latency_s(q, expert)
            other = best2 if q == arg1 else best1
            k = (max(loads[q] + added, other), added, q)
            if key is None or k < key:
                key, choice = k, q
        return choice


ASSIGN_POLICIES: dict[str, type[AssignPolicy]] = {
    RoundRobinAssign.name: RoundRobinAssign,
    MakespanAssign.name: MakespanAssign,
}
