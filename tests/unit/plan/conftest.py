"""A small planning case: a 40-type board on paper-numa's costs, a few GB of memory."""

from __future__ import annotations

import pytest

from orchestrator.plan.evaluate import Evaluator, search_seeds
from orchestrator.plan.memory import Machine, preset_overheads
from orchestrator.simulate.presets import Preset, load_preset
from orchestrator.simulate.workload import TaskSpec, build_workload

GB = 1_000_000_000


@pytest.fixture(scope="session")
def numa() -> Preset:
    return load_preset("paper-numa")


def small_evaluator(
    preset: Preset, *, machine: Machine | None = None, policy: str = "coserve", seeds: int = 1, max_runs: int = 100
) -> Evaluator:
    spec = TaskSpec("small", "A", types=40, requests=300, seed=5, detectors=2)
    wl = build_workload(spec, preset.profile)
    return Evaluator(
        wl,
        preset.profile,
        machine or Machine(2 * GB, (4 * GB,)),
        preset_overheads(preset.gpu_context_bytes),
        policy,
        search_seeds(wl.seed, seeds),
        max_runs,
    )
