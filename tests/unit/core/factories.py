"""Small builders for core unit tests (profiles, CoE definitions, graphs, configs)."""

from __future__ import annotations

from typing import Any

from orchestrator.coe import CoEDefinition, parse_coe
from orchestrator.core.graph import DependencyGraph, ExpertNode, TypeRoute
from orchestrator.core.profile import CostProfile, parse_profile
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig

MB = 1_000_000


def make_profile(
    k_s: float = 0.01,
    b_s: float = 0.01,
    max_batch: int = 4,
    disk_s: float = 1.0,
    cpu_s: float = 0.1,
    act: int = 1 * MB,
    concurrent_loads: int = 2,
) -> CostProfile:
    arch: dict[str, Any] = {
        "gpu": {
            "k_s": k_s,
            "b_s": b_s,
            "max_batch": max_batch,
            "load_time_s": {"disk": disk_s, "cpu": cpu_s},
            "activation_bytes_per_item": act,
        },
        "cpu": {
            "k_s": k_s * 5,
            "b_s": b_s,
            "max_batch": max_batch,
            "load_time_s": {"disk": disk_s},
            "activation_bytes_per_item": act,
        },
    }
    return parse_profile(
        {
            "name": "unit",
            "processors": {
                "gpu": {"concurrent_loads": concurrent_loads},
                "cpu": {"concurrent_loads": concurrent_loads},
            },
            "architectures": {"classifier": arch, "detector": arch},
        },
        "unit-profile",
    )


def make_coe(
    types: int = 6, detector_every: int = 2, size_mb: float = 10.0, no_defect: float = 0.9
) -> CoEDefinition:
    experts: list[dict[str, Any]] = [
        {"name": f"cls_{i}", "arch": "classifier", "size_mb": size_mb} for i in range(types)
    ]
    experts.append({"name": "det_0", "arch": "detector", "size_mb": size_mb * 2})
    routing: list[dict[str, Any]] = []
    for i in range(types):
        rule: dict[str, Any] = {
            "component_type": f"t{i}",
            "classifier": f"cls_{i}",
            "no_defect_prob": no_defect,
        }
        if detector_every and i % detector_every == 0:
            rule["detector"] = "det_0"
        routing.append(rule)
    mix = {f"t{i}": types - i for i in range(types)}
    return parse_coe(
        {"name": "unit", "experts": experts, "routing": routing, "board": {"name": "b", "mix": mix}},
        "unit-coe",
    )


def make_graph(coe: CoEDefinition | None = None) -> DependencyGraph:
    coe = coe or make_coe()
    nodes = []
    dets = {r.detector for r in coe.routing.values() if r.detector}
    for e in coe.experts.values():
        b = int(e.size_mb * MB)
        nodes.append(
            ExpertNode(
                e.name, e.arch, {"gpu": b, "cpu": b}, "subsequent" if e.name in dets else "preliminary"
            )
        )
    probs = coe.type_probabilities()
    routes = [
        TypeRoute(probs[t], r.classifier, r.detector, r.no_defect_prob if r.detector else 1.0)
        for t, r in coe.routing.items()
    ]
    return DependencyGraph(nodes, routes)


def make_config(*budgets_mb: float, kind: str = "gpu", cpu_mb: float | None = None) -> ServeConfig:
    execs = [ExecutorConfig(f"{kind}{i}", kind, int(b * MB)) for i, b in enumerate(budgets_mb or (100,))]
    if cpu_mb is not None:
        execs.append(ExecutorConfig("cpu0", "cpu", int(cpu_mb * MB)))
    return ServeConfig(executors=tuple(execs))


class InstantDriver:
    """Confirms loads and unloads at once (no time passes) and records dispatches; batches are
    finished explicitly with ``finish``."""

    def __init__(self, core: Any) -> None:
        from orchestrator.core.decisions import Complete, Dispatch, Load, Reject, Unload

        self.core = core
        self._types = (Complete, Dispatch, Load, Reject, Unload)
        self.dispatches: list[Any] = []
        self.loads: list[Any] = []
        self.unloads: list[Any] = []
        self.completed: list[int] = []
        self.rejected: dict[int, str] = {}
        self.now = 0.0
        self.finished: set[int] = set()

    def run(self, decisions: list[Any]) -> None:
        Complete, Dispatch, Load, Reject, Unload = self._types
        todo = list(decisions)
        while todo:
            d = todo.pop(0)
            if isinstance(d, Load):
                self.loads.append(d)
                todo.extend(self.core.on_load_done(d.executor, d.expert, self.now))
            elif isinstance(d, Unload):
                self.unloads.append(d)
                todo.extend(self.core.on_unload_done(d.executor, d.expert, self.now))
            elif isinstance(d, Dispatch):
                self.dispatches.append(d)
            elif isinstance(d, Complete):
                self.completed.append(d.request_id)
            elif isinstance(d, Reject):
                self.rejected[d.request_id] = d.reason

    def place(self) -> None:
        self.run(self.core.initial_placement(self.now))

    def arrive(self, request: Any) -> None:
        self.run(self.core.on_arrival(request, self.now))

    def finish(self, dispatch: Any, verdicts: dict[int, bool] | None = None) -> None:
        self.finished.add(dispatch.batch_id)
        self.run(self.core.on_batch_done(dispatch.batch_id, self.now, verdicts or {}))

    def finish_all(self, verdicts: dict[int, bool] | None = None) -> None:
        while True:
            pending = [d for d in self.dispatches if d.batch_id not in self.finished]
            if not pending:
                return
            for d in pending:
                self.finish(d, verdicts)
