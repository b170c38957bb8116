"""Per-executor cost tables: what one expert costs on one processor kind (from the profile)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.core.graph import DependencyGraph
from orchestrator.core.profile import CostProfile


@dataclass(frozen=True)
class ExpertCost:
    """An expert on one processor kind: batch model ``k*n + b`` up to ``maxb`` items, load time per
    tier, weight bytes and activation bytes per item."""

    k: float
    b: float
    maxb: int
    load: Mapping[str, float]
    bytes: int
    act: int

    def load_s(self, tier: str) -> float:
        """Load time from ``tier``; a tier the profile does not list costs a disk load."""
        return self.load.get(tier, self.load["disk"])


CostTable = dict[str, ExpertCost | None]


def cost_table(graph: DependencyGraph, profile: CostProfile, kind: str) -> CostTable:
    """Every expert's cost on ``kind``; None where its architecture has no entry for ``kind`` or the
    expert has no bytes for it (it never runs there)."""
    out: CostTable = {}
    for name in graph.experts:
        ac = profile.cost(graph.arch(name), kind)
        nbytes = graph.bytes(name, kind)
        if ac is None or nbytes is None:
            out[name] = None
            continue
        out[name] = ExpertCost(
            ac.k_s, ac.b_s, ac.max_batch, ac.load_time_s, nbytes, ac.activation_bytes_per_item
        )
    return out
