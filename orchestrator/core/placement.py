"""Where experts go when no request asks for them: the paper's initial placement and the online
re-placement when the whole box is idle (feature ``online_probabilities``)."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.core.costs import CostTable
from orchestrator.core.decisions import Decision
from orchestrator.core.expert_manager import ExpertManager
from orchestrator.core.graph import DependencyGraph

REPLACE_RATIO = 2.0  # online re-placement: a resident expert this many times less likely is swapped
REPLACE_MIN_PROB = 1e-3  # ... for an expert used by at least this share of requests


def batch_reserve(costs: CostTable) -> int:
    """Activation bytes of one max batch of the hungriest architecture an executor runs."""
    return max((c.act * c.maxb for c in costs.values() if c is not None), default=0)


def initial_placement(
    graph: DependencyGraph, experts: ExpertManager, costs: Sequence[CostTable], now: float
) -> list[Decision]:
    """Loads to run (and confirm) before serving: experts by descending usage probability, each on
    the next executor (round-robin) where it fits while keeping one max batch of activations free."""
    out: list[Decision] = []
    n = len(costs)
    reserve = [batch_reserve(c) for c in costs]
    cursor = 0
    for name in graph.ranked():
        if graph.usage_prob(name) <= 0.0:
            continue
        for j in range(n):
            q = (cursor + j) % n
            c = costs[q][name]
            if c is None or experts.pools[q].free_bytes - c.bytes < reserve[q]:
                continue
            out.append(experts.load(q, name, c, "disk", now, initial=True))
            cursor = (cursor + j + 1) % n
            break
    return out


def place_everything(experts: ExpertManager, costs: Sequence[CostTable], now: float) -> list[Decision]:
    """Every expert on every executor that can run it (pools with unlimited memory)."""
    out: list[Decision] = []
    for q, table in enumerate(costs):
        for name, c in table.items():
            if c is not None:
                out.append(experts.load(q, name, c, "disk", now, initial=True))
    return out


def idle_replacement(
    graph: DependencyGraph, experts: ExpertManager, costs: CostTable, q: int, now: float
) -> list[Decision]:
    """Placement follows the (online) mix: the caller has checked that nothing is queued anywhere;
    if no load or unload is in flight either, executor ``q`` loads the likeliest expert no executor
    holds, evicting its least likely ones when they are at least REPLACE_RATIO times less likely.
    One change at a time (the load follows once the unloads are confirmed)."""
    out: list[Decision] = []
    # only while the box is not switching: a proactive load must not delay a demand load
    if experts.busy_switching():
        return out
    best: str | None = None
    for name in graph.ranked():
        if costs[name] is None or experts.held_anywhere(name):
            continue
        best = name
        break
    if best is None:
        return out
    c = costs[best]
    assert c is not None
    p_best = graph.usage_prob(best)
    if p_best <= REPLACE_MIN_PROB:
        return out
    pool = experts.pools[q]
    reserve = c.act * c.maxb
    if pool.free_bytes - c.bytes >= reserve:
        out.append(experts.load(q, best, c, experts.tier(q, best), now))
        experts.stats.replacement_loads += 1
        return out
    victims = experts.eviction.victims(pool, graph, c.bytes + reserve, {best})
    if not victims or any(graph.usage_prob(v) * REPLACE_RATIO > p_best for v in victims):
        return out
    for v in victims:
        out.append(experts.unload(q, v, "replaced by a likelier expert", now))
    return out
