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
This module imports no other core module but ``features``: the serve config validates its ``policy``
name here.

Baseline rules, each beside the rule of the CoServe paper (ASPLOS 2025) it implements. The paper
compares against Samba-CoE, which serves a CoE on one executor, switching experts on demand with
LRU replacement and keeping experts in host memory below the accelerator's, and against Samba-CoE
with FIFO replacement and Samba-CoE Parallel (several executors). Every rule gives the baseline
what the paper gives it and every fair advantage it does not:

1. *One executor with the device's memory* -> ``executors="single"``: one GPU executor with the GPU
   memory of one process (the serve config's GPU budgets plus the CUDA contexts of the executor
   processes it does not run, ``gpu_context_bytes`` each: ``orchestrator.core.layout``).
2. *Host memory caches experts* -> ``cpu_cache=True``: all CPU memory (the CPU executors' budgets
   plus ``cpu_cache_bytes``) is a cache tier; it keeps every expert read from disk (once the read
   is done) and every expert the GPU evicts; a GPU load from it is a host copy ("cpu" tier).
3. *First come, first served* -> ``assign="round-robin"`` over one executor, ``arrange=False``:
   strict FCFS order of service; back-to-back requests for the same expert share a batch.
4. *On-demand switching with LRU (or FIFO) replacement* -> ``eviction="lru"`` / ``"fifo"``,
   ``initial_placement=False``: nothing placed ahead, a missing expert is loaded when its request
   reaches the head of the queue, the least recently used (first loaded) expert is evicted.
5. *As many loads in flight as the device allows* (ours, a fair advantage) -> ``lookahead=True``:
   while the head's expert loads or its batch runs, the experts of the next distinct queued
   requests load too whenever the box has a free load slot, evicting by rule 4 but never an expert
   a request ahead of it needs; the order of service stays strictly FCFS.
6. *Samba-CoE Parallel* -> ``executors="gpu-split"``: as many GPU executors as the serve config has
   executors (CoServe's count), sharing the GPU budgets evenly and the cache tier of rule 2 (they
   are not charged the contexts of their extra processes), requests dealt round-robin, rules 3-5
   per executor.
7. *Host copies* (ours, every policy) -> ``host_copy=True``: an expert a CPU executor holds is
   copied from host memory instead of read from disk again (no Samba layout has a CPU executor).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.features import FLAGS
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
    lookahead: bool = False  # load the next queued groups' experts while the head loads or runs
    features: tuple[str, ...] = ()  # boolean features (core/features.py) the policy turns on


POLICIES: dict[str, PolicySpec] = {}

# coserve+ = coserve with the features that help (benchmarks/plus_ablation.py leaves each out on
# the paper task specs with their own and six other seeds; benchmarks/sim_beyond.py, "features";
# docs/simulator.md): queue-aware eviction on every paper task; loads ahead where they do not
# compete for the disk (they are inert otherwise); headroom where unloads are slow, and memory on
# its way back counted everywhere (no second victim per in-flight unload); duplicate-first
# eviction and disk-aware assignment where the shared disk is the bottleneck (fewer disk loads:
# the box keeps more distinct experts, a step joins the executor holding its expert rather than
# queueing another read; inert on one executor); serving ready groups while the head loads where
# executors share the disk (alone it lost 1-5% on the paper's bursts, a group served early
# stopping gathering the burst's later steps; with the features above it gains, in the tail that
# big detector groups formed late otherwise leave after the last load; it gives way to loads
# ahead). Not batch room: leaving it out of this set gains on 46 of 56 paper-spec runs (+2.2
# points of the bound on paper-numa, +1.1 on paper-uma; it had been chosen alone): while
# requests still arrive, the experts "no queued step needs" that it evicts for a full batch are
# often needed by requests not yet arrived (detectors among them), a 1.35 s read to save ~9 ms.
COSERVE_PLUS_FEATURES: tuple[str, ...] = (
    "queue_aware_eviction",
    "lookahead_loading",
    "unload_headroom",
    "dedup_eviction",
    "disk_aware_assign",
    "serve_resident",
)


def register_policy(spec: PolicySpec) -> None:
    unknown = set(spec.features) - set(FLAGS)
    if unknown:
        raise ValueError(f"policy {spec.name!r}: unknown features {sorted(unknown)}")
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
    PolicySpec(
        "samba-lru",
        "round-robin",
        False,
        "lru",
        False,
        "single",
        True,
        "Samba-CoE: FCFS, LRU",
        lookahead=True,
    ),
    PolicySpec(
        "samba-fifo",
        "round-robin",
        False,
        "fifo",
        False,
        "single",
        True,
        "Samba-CoE with FIFO",
        lookahead=True,
    ),
    PolicySpec(
        "samba-parallel",
        "round-robin",
        False,
        "lru",
        False,
        "gpu-split",
        True,
        "Samba-CoE, n executors, dealt RR",
        lookahead=True,
    ),
    PolicySpec(
        "coserve+",
        "makespan",
        True,
        "two-stage",
        True,
        description="coserve + the beyond-paper features that help",
        features=COSERVE_PLUS_FEATURES,
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
DEFAULT_POLICIES: tuple[str, ...] = (*PAPER_POLICIES, "coserve+")  # what `coserve simulate` replays
