"""The evaluator for a plan's inputs: a preset with a paper task, or a measured profile with a CoE.

Pure: the caller reads the files (``orchestrator.cli_plan``; the benchmarks). The default policy is
``coserve+`` where it is registered, else ``coserve``.
"""

from __future__ import annotations

from orchestrator.coe import CoEDefinition
from orchestrator.core.policies import POLICIES, get_policy
from orchestrator.core.profile import CostProfile
from orchestrator.plan.evaluate import Evaluator, Progress, search_seeds
from orchestrator.plan.memory import Machine, Overheads, preset_overheads, profile_overheads
from orchestrator.simulate.presets import Preset
from orchestrator.simulate.workload import PAPER_TASKS, build_workload, workload_from_coe

DEFAULT_SEEDS = 4
DEFAULT_MAX_RUNS = 240
DEFAULT_REQUESTS = 600  # as coserve bench
DEFAULT_INTERVAL_S = 0.004
DEFAULT_WARMUP = 200  # requests before the measured task, as coserve bench (CoE workloads)


def default_policy() -> str:
    return "coserve+" if "coserve+" in POLICIES else "coserve"


def preset_evaluator(
    preset: Preset,
    task: str,
    machine: Machine,
    *,
    policy: str | None = None,
    seeds: int = DEFAULT_SEEDS,
    max_runs: int = DEFAULT_MAX_RUNS,
    progress: Progress | None = None,
    source: str = "<preset>",
) -> Evaluator:
    """A paper task on a preset's costs; starts as ``coserve simulate`` does (one prior task)."""
    spec = PAPER_TASKS[task]
    wl = build_workload(spec, preset.profile, source)
    name = policy or default_policy()
    get_policy(name)
    return Evaluator(
        wl, preset.profile, machine, preset_overheads(preset.gpu_context_bytes), name,
        search_seeds(wl.seed, seeds), max_runs, warmup_requests=None, progress=progress,
    )


def coe_evaluator(
    coe: CoEDefinition,
    profile: CostProfile,
    machine: Machine,
    *,
    policy: str | None = None,
    seeds: int = DEFAULT_SEEDS,
    max_runs: int = DEFAULT_MAX_RUNS,
    requests: int = DEFAULT_REQUESTS,
    interval_s: float = DEFAULT_INTERVAL_S,
    warmup_requests: int = DEFAULT_WARMUP,
    gpu_context_bytes: int | None = None,
    overheads: Overheads | None = None,
    progress: Progress | None = None,
    source: str = "<profile>",
) -> Evaluator:
    """A CoE's board mix on a measured profile; starts as ``coserve bench`` does (a warm-up of
    ``warmup_requests`` requests of another seed)."""
    wl = workload_from_coe(coe, profile, requests, interval_s, coe.seed, source)
    name = policy or default_policy()
    get_policy(name)
    return Evaluator(
        wl, profile, machine, overheads or profile_overheads(profile, gpu_context_bytes), name,
        search_seeds(wl.seed, seeds), max_runs, warmup_requests=warmup_requests, progress=progress,
    )
