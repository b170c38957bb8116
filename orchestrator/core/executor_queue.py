"""One executor's queue: groups of steps for one expert, the arrangement, the predicted backlog
and the starvation guard. No memory, no decisions: the scheduler asks, the queue answers.

A *group* is consecutive queued steps for one expert, served as batches. With ``arrange`` (the
paper's request arranging) a new step joins the queued group of its expert wherever it is, so each
queued expert appears in at most one group (and is loaded at most once for it); without it (FCFS) a
step joins only the tail group when that group has the same expert.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from orchestrator.core.costs import CostTable, ExpertCost


@dataclass
class Step:
    """One step of a request: its preliminary (stage 0) or subsequent (stage 1) expert."""

    request_id: int
    expert: str
    stage: int
    arrival_s: float
    enqueued_s: float
    deadline_s: float = math.inf  # its request's deadline on the core's clock (inf: none)


@dataclass
class Group:
    expert: str
    steps: deque[Step]
    switch_pred_s: float  # predicted load time still ahead of this group (0 once issued)
    pred_s: float = 0.0  # this group's share of the queue's predicted backlog
    _oldest: float = float("inf")  # the oldest arrival among its steps (kept as steps come and go)
    _deadline: float = math.inf  # the earliest deadline among its steps (likewise)

    def oldest_arrival(self) -> float:
        return self._oldest

    def earliest_deadline(self) -> float:
        return self._deadline

    def append(self, step: Step) -> None:
        self.steps.append(step)
        if step.arrival_s < self._oldest:
            self._oldest = step.arrival_s
        if step.deadline_s < self._deadline:
            self._deadline = step.deadline_s

    def popleft(self) -> Step:
        s = self.steps.popleft()
        self._forget(s)
        return s

    def discard(self, request_id: int) -> Step | None:
        """Drop the step of ``request_id`` if it is here; the step dropped, or None."""
        for s in self.steps:
            if s.request_id == request_id:
                self.steps.remove(s)
                self._forget(s)
                return s
        return None

    def _forget(self, s: Step) -> None:
        if s.arrival_s <= self._oldest:
            self._oldest = min((x.arrival_s for x in self.steps), default=float("inf"))
        if s.deadline_s <= self._deadline:
            self._deadline = min((x.deadline_s for x in self.steps), default=math.inf)


def join_cost_s(group: Group, c: ExpertCost) -> float:
    """Seconds one more step adds to ``group``: K, plus B when it opens a new batch."""
    return c.k + (c.b if len(group.steps) % c.maxb == 0 else 0.0)


class ExecutorQueue:
    """The queue of one executor. ``backlog_s`` is the sum of its groups' predictions, kept
    incrementally; ``busy_until_pred`` is when its current batch or load is predicted to end."""

    def __init__(self, costs: CostTable, arrange: bool) -> None:
        self.costs = costs
        self.arrange = arrange
        self.groups: list[Group] = []
        self.by_expert: dict[str, Group] = {}
        self.backlog_s = 0.0
        # queued steps with a finite deadline: without any, deadline order has nothing to reorder
        # (its scan over every group is skipped; on an FCFS queue of thousands that scan was the
        # arrival's whole cost)
        self.deadline_steps = 0
        self.busy_until_pred = 0.0

    def __bool__(self) -> bool:
        return bool(self.groups)

    def steps(self) -> int:
        return sum(len(g.steps) for g in self.groups)

    # ---- predictions ------------------------------------------------------------------------
    def predicted_backlog_s(self, now: float) -> float:
        return max(0.0, self.busy_until_pred - now) + self.backlog_s

    def joinable(self, expert: str) -> Group | None:
        """The group a new step for ``expert`` would join (None: it would open a new group)."""
        if self.arrange:
            return self.by_expert.get(expert)
        if self.groups and self.groups[-1].expert == expert:
            return self.groups[-1]
        return None

    def _cost(self, expert: str) -> ExpertCost:
        c = self.costs[expert]
        assert c is not None
        return c

    def repred(self, g: Group) -> None:
        c = self._cost(g.expert)
        n = len(g.steps)
        new = g.switch_pred_s + c.k * n + c.b * math.ceil(n / c.maxb)
        self.backlog_s += new - g.pred_s
        g.pred_s = new

    def switch_issued(self, g: Group) -> None:
        """``g``'s expert is loading or ready: no switch is predicted ahead of it any more."""
        if g.switch_pred_s:
            g.switch_pred_s = 0.0
            self.repred(g)

    # ---- changes ----------------------------------------------------------------------------
    def add(self, step: Step, switch_s: float) -> Group:
        """Queue ``step``: join its group, or open one predicted to need ``switch_s`` of loading."""
        g = self.joinable(step.expert)
        if g is None:
            g = Group(step.expert, deque(), switch_s)
            self.groups.append(g)
            if self.arrange:
                self.by_expert[step.expert] = g
        g.append(step)
        if step.deadline_s != math.inf:
            self.deadline_steps += 1
        self.repred(g)
        return g

    def remove(self, g: Group) -> None:
        self.groups.remove(g)
        if self.deadline_steps:
            self.deadline_steps -= sum(1 for s in g.steps if s.deadline_s != math.inf)
        self.backlog_s -= g.pred_s
        if self.by_expert.get(g.expert) is g:
            del self.by_expert[g.expert]

    def take(self, g: Group, n: int) -> list[Step]:
        """Pop the first ``n`` steps of group ``g`` (the head, or a ready group served while the
        head loads), removing it once empty."""
        steps = [g.popleft() for _ in range(n)]
        if self.deadline_steps:
            self.deadline_steps -= sum(1 for s in steps if s.deadline_s != math.inf)
        if g.steps:
            self.repred(g)
        else:
            self.remove(g)
        return steps

    def discard(self, request_id: int) -> bool:
        """Drop the queued step of ``request_id`` (its caller gave up), removing its group once
        empty; True if it was queued here."""
        for g in self.groups:
            step = g.discard(request_id)
            if step is not None:
                if step.deadline_s != math.inf:
                    self.deadline_steps -= 1
                if g.steps:
                    self.repred(g)
                else:
                    self.remove(g)
                return True
        return False

    def needed_after(self) -> list[tuple[str, float]]:
        """(expert, predicted seconds of queued work ahead of its group), in queue order."""
        out = []
        t = 0.0
        for g in self.groups:
            out.append((g.expert, t))
            t += g.pred_s
        return out

    # ---- deadline order and the starvation guard --------------------------------------------
    def select_head(self, now: float, bound_s: float | None) -> Group:
        """Move the group to serve next to the front and return it (the queue must not be empty).

        Deadline order first: the group holding the step with the earliest deadline is served next
        when serving the head's next batch first would make that step miss its deadline and
        serving it now would not (a deadline that cannot be met any more does not reorder the
        queue: its request expires either way). Otherwise, without a bound, the head. With one,
        the group holding the oldest step is served next once that step (its request's arrival)
        is older than the bound, or would be by the time the head's next batch ends."""
        gi = self._deadline_pick(now) or self._guard_pick(now, bound_s)
        if gi:
            self.groups.insert(0, self.groups.pop(gi))
        return self.groups[0]

    def _next_batch_s(self, g: Group) -> float:
        c = self._cost(g.expert)
        return g.switch_pred_s + c.k * min(c.maxb, len(g.steps)) + c.b

    def _deadline_pick(self, now: float) -> int:
        if len(self.groups) < 2 or not self.deadline_steps:
            return 0
        best, earliest = 0, self.groups[0].earliest_deadline()
        for i in range(1, len(self.groups)):
            d = self.groups[i].earliest_deadline()
            if d < earliest:
                earliest, best = d, i
        if not best or math.isinf(earliest):
            return 0
        own_s = self._next_batch_s(self.groups[best])
        if now + own_s > earliest:  # lost already
            return 0
        if now + self._next_batch_s(self.groups[0]) + own_s > earliest:
            return best
        return 0

    def _guard_pick(self, now: float, bound: float | None) -> int:
        if bound is None or len(self.groups) < 2:
            return 0
        best = 0
        oldest = self.groups[0].oldest_arrival()
        for i in range(1, len(self.groups)):
            a = self.groups[i].oldest_arrival()
            if a < oldest:
                oldest, best = a, i
        if not best:
            return 0
        # look one batch ahead: serving the head first would push the oldest step past the bound
        head = self.groups[0]
        c = self._cost(head.expert)
        head_s = c.k * min(c.maxb, len(head.steps)) + c.b
        if now - oldest > bound - head_s:
            return best
        return 0
