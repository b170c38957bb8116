"""The expert dependency graph (networkx), with usage probabilities that can follow the real mix.

Nodes are experts: ``arch`` (cost-profile architecture), ``bytes`` (weight bytes per processor
kind), ``role`` (preliminary/subsequent) and ``prior`` (usage probability from routing rules x the
board mix: the expected number of times one request uses the expert). Edges go from a preliminary
to a subsequent expert; ``prob`` is the conditional probability of the hand-off.

``usage_prob`` is the prior until online observation is switched on; then it is a blend of the
prior (``prior_weight`` pseudo-observations) and exponentially decayed counts of observed uses, so
eviction and placement follow the mix when it drifts. The paper fixes probabilities offline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx


@dataclass(frozen=True)
class ExpertNode:
    name: str
    arch: str
    bytes_by_kind: Mapping[str, int]
    role: str  # "preliminary" | "subsequent"


@dataclass(frozen=True)
class TypeRoute:
    """One component type: its share of requests and where it is routed."""

    share: float
    classifier: str
    detector: str | None = None
    no_defect_prob: float = 1.0


class DependencyGraph:
    def __init__(self, experts: Iterable[ExpertNode], routes: Iterable[TypeRoute]) -> None:
        g: nx.DiGraph = nx.DiGraph()
        for e in experts:
            g.add_node(e.name, arch=e.arch, bytes=dict(e.bytes_by_kind), role=e.role, prior=0.0)
        routes = list(routes)
        total = sum(r.share for r in routes) or 1.0
        flow: dict[tuple[str, str], float] = {}
        for r in routes:
            share = r.share / total
            g.nodes[r.classifier]["prior"] += share
            if r.detector is not None:
                handed = share * r.no_defect_prob
                g.nodes[r.detector]["prior"] += handed
                flow[(r.classifier, r.detector)] = flow.get((r.classifier, r.detector), 0.0) + handed
        for (c, d), handed in sorted(flow.items()):
            cp = g.nodes[c]["prior"]
            g.add_edge(c, d, prob=handed / cp if cp > 0 else 0.0)
        self.g = g
        self._names = sorted(g.nodes)
        self._prior: dict[str, float] = {n: float(g.nodes[n]["prior"]) for n in self._names}
        self._preds: dict[str, tuple[str, ...]] = {n: tuple(sorted(g.predecessors(n))) for n in self._names}
        self._succs: dict[str, tuple[tuple[str, float], ...]] = {
            n: tuple(
                sorted(
                    ((s, float(g.edges[n, s]["prob"])) for s in g.successors(n)), key=lambda x: (-x[1], x[0])
                )
            )
            for n in self._names
        }
        # online observation state (exponentially decayed counts via a growing weight)
        self.online = False
        self.prior_weight = 50.0
        self._growth = 1.0
        self._w = 1.0
        self._counts: dict[str, float] = {}
        self._total = 0.0
        self._requests_w = 0.0

    # ---- static structure -------------------------------------------------------------
    @property
    def experts(self) -> list[str]:
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._prior

    def arch(self, name: str) -> str:
        return str(self.g.nodes[name]["arch"])

    def role(self, name: str) -> str:
        return str(self.g.nodes[name]["role"])

    def bytes(self, name: str, kind: str) -> int | None:
        b = self.g.nodes[name]["bytes"].get(kind)
        return None if b is None else int(b)

    def predecessors(self, name: str) -> tuple[str, ...]:
        return self._preds[name]

    def successors(self, name: str) -> tuple[tuple[str, float], ...]:
        """Subsequent experts of ``name`` with their hand-off probability, likeliest first."""
        return self._succs[name]

    def prior(self, name: str) -> float:
        return self._prior[name]

    # ---- usage probabilities --------------------------------------------------------------
    def enable_online(self, half_life: float, prior_weight: float = 50.0) -> None:
        self.online = True
        self._growth = math.pow(2.0, 1.0 / half_life)
        self.prior_weight = prior_weight

    def set_probabilities(self, probs: Mapping[str, float]) -> None:
        """Replace the prior (an oracle that knows the mix, or a fresh offline estimate); past
        observations are forgotten."""
        for n in self._names:
            self._prior[n] = float(probs.get(n, 0.0))
        self._counts.clear()
        self._requests_w = 0.0

    def observe_request(self) -> None:
        """One request arrived (the denominator of usage per request)."""
        if not self.online:
            return
        self._w *= self._growth
        self._requests_w += self._w
        if self._w > 1e150:
            self._rescale()

    def observe_use(self, expert: str) -> None:
        """A step for ``expert`` was enqueued."""
        if not self.online:
            return
        self._counts[expert] = self._counts.get(expert, 0.0) + self._w

    def _rescale(self) -> None:
        s = 1.0 / self._w
        self._w = 1.0
        self._requests_w *= s
        for k in self._counts:
            self._counts[k] *= s

    def usage_snapshot(self) -> dict[str, Any]:
        """What online observation has learned, as plain data (``restore_usage`` takes it back, a
        warm restart): the decayed request count and use counts per expert, in units of the
        newest observation's weight (so the snapshot does not depend on when it was taken)."""
        return {
            "requests": self._requests_w / self._w,
            "uses": {n: c / self._w for n, c in sorted(self._counts.items())},
        }

    def restore_usage(self, snapshot: Mapping[str, Any]) -> None:
        """Continue observing from ``snapshot`` (``usage_snapshot``'s form); uses of experts this
        graph lacks are dropped. ``ValueError`` if it is malformed (then nothing changes)."""
        try:
            requests = float(snapshot["requests"])
            uses = {str(n): float(c) for n, c in dict(snapshot["uses"]).items() if n in self._prior}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a usage snapshot: {exc!r}") from None
        if not all(math.isfinite(v) and v >= 0.0 for v in (requests, *uses.values())):
            raise ValueError("a usage snapshot's counts must be finite and >= 0")
        self._w, self._requests_w, self._counts = 1.0, requests, uses

    def usage_prob(self, expert: str) -> float:
        p = self._prior.get(expert, 0.0)
        if not self.online or self._requests_w <= 0.0:
            return p
        # effective number of observed requests is requests_w / w (decayed)
        n_eff = self._requests_w / self._w
        obs = self._counts.get(expert, 0.0) / self._requests_w
        return (self.prior_weight * p + n_eff * obs) / (self.prior_weight + n_eff)

    def ranked(self) -> list[str]:
        """Experts by descending usage probability (ties by name)."""
        return sorted(self._names, key=lambda n: (-self.usage_prob(n), n))
