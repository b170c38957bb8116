"""Workloads: the paper's tasks (boards A/B), custom synthetic boards, and CoE files.

A workload is a dependency graph (experts, routing x mix) plus a request stream: one component
image every ``interval_s``, its type drawn from the board's mix, and the classifier's verdict
(whether the detector step is needed) drawn from the type's ``no_defect_prob``. Everything comes
from one ``random.Random(seed)``, so the same inputs always give the same workload.

The calibrated mix (see docs/simulator.md): p(rank i) proportional to ``i**-s * exp(-i/c)``, a
Zipf head with an exponential cut-off that makes the tail thin. ``s`` and ``c`` are fitted so that
the top 35 experts carry ~60% of requests and a 2,500-request task touches ~190-200 distinct
classifiers, which is what the switch counts published in the CoServe paper (ASPLOS 2025) require.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from orchestrator.coe import CoEDefinition
from orchestrator.core.coe_graph import bytes_by_kind, coe_nodes_and_routes
from orchestrator.core.graph import DependencyGraph, ExpertNode, TypeRoute
from orchestrator.core.profile import CostProfile
from orchestrator.core.scheduler import Request
from orchestrator.errors import ConfigError

# Fitted mix (docs/simulator.md, "Calibration"): cdf(35) ~0.61, ~195 distinct types in 2,500.
CALIBRATED_S = 0.30
CALIBRATED_CUTOFF = 52.0

CLASSIFIER_ARCH = "resnet101"
DETECTOR_ARCHS = ("yolov5m", "yolov5l")
# A CoE file names roles (classifier/detector); a profile without those keys (the paper presets)
# costs them as the paper's networks.


@dataclass(frozen=True)
class TaskSpec:
    name: str
    board: str
    types: int
    requests: int
    interval_s: float = 0.004
    seed: int = 1
    detectors: int = 4
    detector_share: float = 0.3
    zipf: float | None = None  # None: the calibrated mix
    mix_s: float = CALIBRATED_S
    mix_cutoff: float = CALIBRATED_CUTOFF
    no_defect_low: float = 0.85
    no_defect_high: float = 0.98
    # optional mid-task mix change: from request index `change_at`, ranks are permuted with `change_seed`
    change_at: int | None = None
    change_seed: int = 99


PAPER_TASKS: dict[str, TaskSpec] = {
    "A1": TaskSpec("A1", "A", 352, 2500, seed=11),
    "A2": TaskSpec("A2", "A", 352, 3500, seed=12),
    "B1": TaskSpec("B1", "B", 342, 2500, seed=21),
    "B2": TaskSpec("B2", "B", 342, 3500, seed=22),
}


def warmup_seed(seed: int, i: int) -> int:
    """The seed of the ``i``-th warm-up task before a task drawn with ``seed`` (another seed, the
    same for every policy and every process)."""
    return (seed + 1) * 1_000_003 + 7_919 * (i + 1)


def mix_weights(n: int, s: float, cutoff: float | None) -> list[float]:
    """Normalised p(rank i) ~ i^-s * exp(-i/cutoff) for i = 1..n (cutoff None: pure Zipf)."""
    w = [i ** (-s) * (math.exp(-i / cutoff) if cutoff else 1.0) for i in range(1, n + 1)]
    t = sum(w)
    return [x / t for x in w]


@dataclass
class Workload:
    name: str
    board: str
    graph_nodes: list[ExpertNode]
    routes: dict[str, TypeRoute]  # component type -> route (share = probability)
    requests: list[Request]
    verdicts: dict[int, bool]
    request_types: list[str]
    phases: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (first index, expert probs)
    # how the requests were drawn, so that a task from the same mix can be drawn again (warm-up)
    type_mix: tuple[tuple[str, ...], tuple[float, ...]] = ((), ())  # the first phase's types and shares
    interval_s: float = 0.0
    seed: int = 0

    def graph(self) -> DependencyGraph:
        return DependencyGraph(self.graph_nodes, self.routes.values())

    def expert_probs(self, type_probs: Mapping[str, float]) -> dict[str, float]:
        g = DependencyGraph(
            self.graph_nodes, [replace(r, share=type_probs.get(t, 0.0)) for t, r in self.routes.items()]
        )
        return {n: g.prior(n) for n in g.experts}

    def redraw(self, seed: int, name: str | None = None) -> Workload:
        """Another task from the same board and mix (the first phase's, no mix change): the same
        experts and routes, as many requests at the same interval, drawn from ``Random(seed)``."""
        names, probs = self.type_mix
        phases: list[tuple[int, Sequence[str], Sequence[float]]] = [(0, names, probs)]
        requests, verdicts, types = _draw(
            random.Random(seed), len(self.requests), self.interval_s, phases, self.routes
        )
        return Workload(
            name or f"{self.name}-seed{seed}",
            self.board,
            self.graph_nodes,
            self.routes,
            requests,
            verdicts,
            types,
            phases=[(0, self.phases[0][1])] if self.phases else [],
            type_mix=self.type_mix,
            interval_s=self.interval_s,
            seed=seed,
        )

    def distinct_experts(self) -> set[str]:
        used: set[str] = set()
        for r in self.requests:
            used.add(r.preliminary)
            if r.subsequent is not None and self.verdicts.get(r.id, False):
                used.add(r.subsequent)
        return used


def _draw(
    rng: random.Random,
    n: int,
    interval_s: float,
    phases: Sequence[tuple[int, Sequence[str], Sequence[float]]],
    routes: Mapping[str, TypeRoute],
) -> tuple[list[Request], dict[int, bool], list[str]]:
    requests: list[Request] = []
    verdicts: dict[int, bool] = {}
    types: list[str] = []
    pi = 0
    cum: list[float] = []
    names: Sequence[str] = ()
    for i in range(n):
        while pi < len(phases) and phases[pi][0] <= i:
            _, names, probs = phases[pi]
            cum, acc = [], 0.0
            for p in probs:
                acc += p
                cum.append(acc)
            pi += 1
        x = rng.random() * cum[-1]
        t = names[min(bisect.bisect_right(cum, x), len(names) - 1)]
        r = routes[t]
        v = rng.random() < r.no_defect_prob
        requests.append(Request(i, round(i * interval_s, 9), r.classifier, r.detector))
        verdicts[i] = bool(v and r.detector is not None)
        types.append(t)
    return requests, verdicts, types


def _check_interval(interval_s: float) -> None:
    if not 0.0 <= interval_s < math.inf:  # written so that NaN fails
        raise ConfigError(
            "workload", "interval_ms", f"must be a finite number >= 0, got {interval_s * 1000.0:g}"
        )


def build_workload(spec: TaskSpec, profile: CostProfile, source: str = "<profile>") -> Workload:
    if spec.types < 1:
        raise ConfigError("workload", "types", f"must be >= 1, got {spec.types}")
    if spec.requests < 1:
        raise ConfigError("workload", "requests", f"must be >= 1, got {spec.requests}")
    if spec.detectors < 0:
        raise ConfigError("workload", "detectors", f"must be >= 0, got {spec.detectors}")
    if spec.zipf is not None and not 0.0 <= spec.zipf < math.inf:  # written so that NaN fails
        raise ConfigError("workload", "zipf", f"must be a finite number >= 0, got {spec.zipf}")
    if not 0.0 <= spec.detector_share <= 1.0:
        raise ConfigError("workload", "detector_share", f"must be in [0, 1], got {spec.detector_share}")
    _check_interval(spec.interval_s)
    rng = random.Random(spec.seed)
    tnames = [f"t{i:03d}" for i in range(spec.types)]
    nodes = [
        ExpertNode(
            f"cls_{t}", CLASSIFIER_ARCH, bytes_by_kind(profile, CLASSIFIER_ARCH, None, source), "preliminary"
        )
        for t in tnames
    ]
    dets = [f"det_{j}" for j in range(spec.detectors)]
    for j, d in enumerate(dets):
        arch = DETECTOR_ARCHS[j % len(DETECTOR_ARCHS)]
        nodes.append(ExpertNode(d, arch, bytes_by_kind(profile, arch, None, source), "subsequent"))
    if spec.zipf is not None:
        weights = mix_weights(spec.types, spec.zipf, None)
    else:
        weights = mix_weights(spec.types, spec.mix_s, spec.mix_cutoff)
    order = list(tnames)
    rng.shuffle(order)  # which type gets which popularity rank
    share = dict(zip(order, weights, strict=True))
    n_det = round(spec.detector_share * spec.types) if dets else 0
    det_types = set(rng.sample(tnames, n_det)) if n_det else set()
    routes: dict[str, TypeRoute] = {}
    for i, t in enumerate(tnames):
        nd = rng.uniform(spec.no_defect_low, spec.no_defect_high)
        det = dets[i % len(dets)] if t in det_types else None
        routes[t] = TypeRoute(share[t], f"cls_{t}", det, nd if det else 1.0)
    phases: list[tuple[int, Sequence[str], Sequence[float]]] = [(0, tnames, [share[t] for t in tnames])]
    if spec.change_at is not None:
        r2 = random.Random(spec.change_seed)
        order2 = list(tnames)
        r2.shuffle(order2)
        share2 = dict(zip(order2, weights, strict=True))
        phases.append((spec.change_at, tnames, [share2[t] for t in tnames]))
    requests, verdicts, types = _draw(rng, spec.requests, spec.interval_s, phases, routes)
    wl = Workload(spec.name, spec.board, nodes, routes, requests, verdicts, types)
    wl.type_mix = (tuple(tnames), tuple(share[t] for t in tnames))
    wl.interval_s, wl.seed = spec.interval_s, spec.seed
    wl.phases = [
        (start, wl.expert_probs(dict(zip(names, probs, strict=True)))) for start, names, probs in phases
    ]
    return wl


def workload_from_coe(
    coe: CoEDefinition, profile: CostProfile, requests: int, interval_s: float, seed: int, source: str
) -> Workload:
    """Requests drawn from the CoE's board mix; expert bytes from the profile, else size_mb * 1e6.

    ``requests`` must be >= 1 and ``interval_s`` a finite number >= 0 (``ConfigError`` otherwise).
    """
    if requests < 1:
        raise ConfigError("workload", "requests", f"must be >= 1, got {requests}")
    _check_interval(interval_s)
    rng = random.Random(seed)
    nodes, routes = coe_nodes_and_routes(coe, profile, source)  # the engine builds its graph the same way
    probs = coe.type_probabilities()
    tnames = sorted(t for t in routes if probs.get(t, 0.0) > 0)
    phases: list[tuple[int, Sequence[str], Sequence[float]]] = [(0, tnames, [probs[t] for t in tnames])]
    reqs, verdicts, types = _draw(rng, requests, interval_s, phases, routes)
    wl = Workload(coe.name, "A", nodes, routes, reqs, verdicts, types)
    wl.type_mix = (tuple(tnames), tuple(probs[t] for t in tnames))
    wl.interval_s, wl.seed = interval_s, seed
    wl.phases = [(0, wl.expert_probs(probs))]
    return wl
