"""Registered policies: one core, pluggable parts.

A ``PolicySpec`` names the parts the core combines:

- ``assign``: which queue a new step goes to (``round-robin`` or the paper's ``makespan``;
  ``orchestrator.core.assign``),
- ``arrange``: insert behind queued steps for the same expert (else strict FCFS, batching only
  back-to-back steps for the same expert),
- ``eviction``: an ``EvictionPolicy`` name (``lru``, ``fifo``, ``usage``, ``two-stage``),
- ``initial_placement``: place experts round-robin by descending usage probability before serving,
- ``executors``: ``serve`` (the serve config's executors), ``single`` (Samba-CoE: one GPU executor
  with all GPU memory; CPU memory caches experts for it) or ``gpu-split`` (Samba-CoE Parallel: as
  many executors as the serve config, all on the GPU, sharing its memory and the CPU cache);
  ``orchestrator.core.layout`` derives them,
- ``cpu_cache``: GPU executors load through a CPU-memory cache tier (Samba-CoE's design; for the
  serve layout it is the beyond-paper feature ``features.cpu_cache`` with ``cpu_cache_bytes``),
- ``host_copy``: a GPU executor copies an expert from host memory (the "cpu" tier) when a CPU
  executor of the box already holds it, instead of reading it from disk again.

Baselines (``samba-*``) and ablations (``none``, ``em``, ``em-ra``) are entries of the registry.
This module imports nothing else of the core: the serve config validates its ``policy`` name here.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import ConfigError


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


def policy_names() -> tuple[str, ...]:
    """The registered policy names, sorted."""
    return tuple(sorted(POLICIES))


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
