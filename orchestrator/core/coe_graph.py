"""The dependency graph of a CoE definition (pure): experts as nodes, routing rules as edges.

An expert's bytes per processor kind come from the cost profile's ``weight_bytes`` (the measured
footprint) where it has one, else from the CoE's ``size_mb``. A CoE architecture named
``classifier``/``detector`` that the profile lacks falls back to the paper presets' names
(``resnet101``/``yolov5m``) so a CoE file replays on the presets too.
"""

from __future__ import annotations

from orchestrator.coe import CoEDefinition
from orchestrator.core.graph import DependencyGraph, ExpertNode, TypeRoute
from orchestrator.core.profile import PROCESSOR_KINDS, CostProfile
from orchestrator.errors import ConfigError

#: CoE architecture -> the presets' architecture of that role
COE_ARCH_ALIASES = {"classifier": "resnet101", "detector": "yolov5m"}


def profile_arch(profile: CostProfile, arch: str) -> str:
    """The profile's architecture name for a CoE architecture (its alias when only that exists)."""
    if arch not in profile.architectures and COE_ARCH_ALIASES.get(arch) in profile.architectures:
        return COE_ARCH_ALIASES[arch]
    return arch


def bytes_by_kind(profile: CostProfile, arch: str, fallback: int | None, source: str) -> dict[str, int]:
    """Bytes of one expert of ``arch`` per processor kind the profile lists for it."""
    out: dict[str, int] = {}
    for kind in PROCESSOR_KINDS:
        c = profile.cost(arch, kind)
        if c is None:
            continue
        b = c.weight_bytes if c.weight_bytes is not None else fallback
        if b is None:
            raise ConfigError(source, f"architectures.{arch}.{kind}.weight_bytes", "is required for synthetic workloads")
        out[kind] = int(b)
    if not out:
        raise ConfigError(source, f"architectures.{arch}", "is missing: the workload uses this architecture")
    return out


def coe_nodes_and_routes(
    coe: CoEDefinition, profile: CostProfile, source: str
) -> tuple[list[ExpertNode], dict[str, TypeRoute]]:
    """The graph's nodes and the routes by component type (shares from the board mix)."""
    subsequent = {r.detector for r in coe.routing.values() if r.detector}
    nodes = []
    for e in coe.experts.values():
        arch = profile_arch(profile, e.arch)
        role = "subsequent" if e.name in subsequent else "preliminary"
        nodes.append(ExpertNode(e.name, arch, bytes_by_kind(profile, arch, int(e.size_mb * 1e6), source), role))
    probs = coe.type_probabilities()
    routes = {
        t: TypeRoute(probs.get(t, 0.0), r.classifier, r.detector, r.no_defect_prob if r.detector else 1.0)
        for t, r in coe.routing.items()
    }
    return nodes, routes


def graph_from_coe(coe: CoEDefinition, profile: CostProfile, source: str) -> DependencyGraph:
    nodes, routes = coe_nodes_and_routes(coe, profile, source)
    return DependencyGraph(nodes, routes.values())
