"""Registered policies: one core, pluggable parts.

A ``PolicySpec`` names the parts the core combines:

- ``assign``: which queue a new step goes to (``round-robin`` or the paper's ``makespan``),
- ``arrange``: insert behind queued steps for the same expert (else strict FCFS, batching only
  back-to-back steps for the same expert),
- ``eviction``: an ``EvictionPolicy`` name (``lru``, ``fifo``, ``usage``, ``two-stage``),
- ``initial_placement``: place experts round-robin by descending usage probability before serving,
- ``executors``: ``serve`` (the serve config's executors), ``single`` (Samba-CoE: one GPU executor
  with all GPU memory; CPU memory caches experts for it) or ``gpu-split`` (Samba-CoE Parallel: as
  many executors as the serve config, all on the GPU, sharing its memory and the CPU cache),
- ``cpu_cache``: GPU executors load through a CPU-memory cache tier (Samba-CoE's design; for the
  serve layout it is the beyond-paper switch ``switches.cpu_cache`` with ``cpu_cache_bytes``),
- ``host_copy``: a GPU executor copies an expert from host memory (the "cpu" tier) when a CPU
  executor of the box already holds it, instead of reading it from disk again.

Baselines (``samba-*``) and ablations (``none``, ``em``, ``em-ra``) are entries of the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from orchestrator.core.scheduler import CoreScheduler


@dataclass(frozen=True)
class PolicySpec:
    name: str
    assign: str
    arrange: bool
    eviction: str
    initial_placement: bool
    executors: str = "serve"
    cpu_cache: bool = False
    description: str = ""
    host_copy: bool = True


POLICIES: dict[str, PolicySpec] = {}


def register_policy(spec: PolicySpec) -> None:
    POLICIES[spec.name] = spec


def get_policy(name: str) -> PolicySpec:
    try:
        return POLICIES[name]
    except KeyError:
        raise ConfigError(
            "--policy", name, f"unknown policy (known: {', '.join(sorted(POLICIES))})"
        ) from None


for _spec in (
    PolicySpec("coserve", "makespan", True, "two-stage", True, description="the paper's method"),
    PolicySpec("samba-lru", "round-robin", False, "lru", False, "single", True, "Samba-CoE: FCFS, LRU"),
    PolicySpec("samba-fifo", "round-robin", False, "fifo", False, "single", True, "Samba-CoE with FIFO"),
    PolicySpec(
        "samba-parallel",
        "round-robin",
        False,
        "lru",
        False,
        "gpu-split",
        True,
        "Samba-CoE, n executors, dealt RR",
    ),
    PolicySpec("none", "round-robin", False, "lru", False, description="ablation: CoServe executors only"),
    PolicySpec("em", "round-robin", False, "two-stage", True, description="ablation: + expert management"),
    PolicySpec("em-ra", "round-robin", True, "two-stage", True, description="ablation: + request arranging"),
):
    register_policy(_spec)

PAPER_POLICIES: tuple[str, ...] = (
    "coserve",
    "samba-lru",
    "samba-fifo",
    "samba-parallel",
    "none",
    "em",
    "em-ra",
)


def executors_for(spec: PolicySpec, config: ServeConfig) -> tuple[tuple[ExecutorConfig, ...], int]:
    """The executors (and CPU cache bytes) a policy runs on, derived from the serve config."""
    execs = config.executors
    gpus = [e for e in execs if e.kind == "gpu"]
    cpus = [e for e in execs if e.kind == "cpu"]
    if spec.executors == "serve":
        cache = config.cpu_cache_bytes if (spec.cpu_cache or config.switches.cpu_cache) else 0
        return execs, cache
    if not gpus:  # a CPU-only box: Samba-CoE runs on the CPU, no cache tier
        if spec.executors == "single":
            return (ExecutorConfig("cpu0", "cpu", sum(e.budget_bytes for e in cpus)),), 0
        return execs, 0
    gpu_total = sum(e.budget_bytes for e in gpus)
    cache = sum(e.budget_bytes for e in cpus) + config.cpu_cache_bytes
    if spec.executors == "single":
        return (ExecutorConfig("gpu0", "gpu", gpu_total),), cache
    if spec.executors == "gpu-split":
        n = len(execs)
        return tuple(ExecutorConfig(f"gpu{i}", "gpu", gpu_total // n) for i in range(n)), cache
    raise ConfigError("policy", spec.name, f"unknown executor layout {spec.executors!r}")


# ---- assignment policies -------------------------------------------------------------


class AssignPolicy:
    """Chooses the queue for a new step among the executors able to run its expert."""

    name = "base"

    def choose(self, core: CoreScheduler, expert: str, candidates: Sequence[int], now: float) -> int:
        raise NotImplementedError


class RoundRobinAssign(AssignPolicy):
    """Deal steps to executors in turn (skipping those that cannot run the expert)."""

    name = "round-robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, core: CoreScheduler, expert: str, candidates: Sequence[int], now: float) -> int:
        n = core.n_executors
        cset = set(candidates)
        for j in range(n):
            q = (self._next + j) % n
            if q in cset:
                self._next = q + 1
                return q
        return candidates[0]


class MakespanAssign(AssignPolicy):
    """The paper: minimise the predicted makespan over queues; ties to the smallest added latency."""

    name = "makespan"

    def choose(self, core: CoreScheduler, expert: str, candidates: Sequence[int], now: float) -> int:
        loads = [core.predicted_backlog_s(q, now) for q in range(core.n_executors)]
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
            added = core.added_latency_s(q, expert)
            other = best2 if q == arg1 else best1
            k = (max(loads[q] + added, other), added, q)
            if key is None or k < key:
                key, choice = k, q
        return choice


ASSIGN_POLICIES: dict[str, type[AssignPolicy]] = {
    RoundRobinAssign.name: RoundRobinAssign,
    MakespanAssign.name: MakespanAssign,
}
