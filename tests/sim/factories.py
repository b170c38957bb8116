"""Builders for simulation tests: small synthetic boards on the paper-numa cost profile."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from orchestrator.core.profile import CostProfile
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.simulate.presets import load_preset
from orchestrator.simulate.workload import PAPER_TASKS, TaskSpec, Workload, build_workload

EXPERT = 178_600_000  # one ResNet101 classifier


def make_profile() -> CostProfile:
    return load_preset("paper-numa").profile


def make_workload(**kw: Any) -> Workload:
    base = replace(PAPER_TASKS["A1"], name="small", types=60, requests=300)
    return build_workload(replace(base, **kw) if kw else base, make_profile())


def make_spec(**kw: Any) -> TaskSpec:
    return replace(PAPER_TASKS["A1"], name="small", **kw)


def make_config(
    gpu_experts: tuple[float, ...] = (6, 6), cpu_experts: float | None = 12, **features: Any
) -> ServeConfig:
    """Executors sized in classifier experts (plus room for a max batch of activations)."""
    execs = [
        ExecutorConfig(f"gpu{i}", "gpu", int(n * EXPERT + 16 * 16_000_000)) for i, n in enumerate(gpu_experts)
    ]
    if cpu_experts is not None:
        execs.append(ExecutorConfig("cpu0", "cpu", int(cpu_experts * EXPERT + 8 * 16_000_000)))
    cfg = ServeConfig(executors=tuple(execs))
    return cfg.with_features(**features) if features else cfg
