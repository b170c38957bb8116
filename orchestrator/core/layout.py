"""The executors a policy runs on, derived from the serve config (one job: the layout).

- ``serve`` (CoServe and the ablations): the serve config's executors; the CPU cache tier only with
  the ``cpu_cache`` feature.
- ``single`` (Samba-CoE): one GPU executor with all the GPU memory of one process: the serve
  config's GPU budgets plus the CUDA contexts of the other GPU executor processes it does not run
  (``gpu_context_bytes`` each); all CPU memory (the CPU executors' budgets plus
  ``cpu_cache_bytes``) is its cache tier. On a box without a GPU it is one CPU executor with all
  the CPU budgets and no cache tier.
- ``gpu-split`` (Samba-CoE Parallel): as many GPU executors as the serve config has executors,
  sharing the GPU budgets evenly (it runs more processes than the serve config has GPU executors
  but is not charged their contexts: generous to the baseline), and the same cache tier.
"""

from __future__ import annotations

from orchestrator.core.policies import PolicySpec
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.errors import ConfigError


def gpu_process_bytes(config: ServeConfig, processes: int) -> int:
    """The GPU memory ``processes`` executor processes share when they replace the serve config's
    GPU executors: the GPU budgets plus the CUDA contexts (``gpu_context_bytes``) of the
    processes no longer run (Samba-CoE's single process is ``processes=1``)."""
    gpus = [e for e in config.executors if e.kind == "gpu"]
    return sum(e.budget_bytes for e in gpus) + (len(gpus) - processes) * config.gpu_context_bytes


def executors_for(spec: PolicySpec, config: ServeConfig) -> tuple[tuple[ExecutorConfig, ...], int]:
    """The executors (and CPU cache bytes) a policy runs on, derived from the serve config."""
    execs = config.executors
    gpus = [e for e in execs if e.kind == "gpu"]
    cpus = [e for e in execs if e.kind == "cpu"]
    if spec.executors == "serve":
        on = spec.cpu_cache or config.features.cpu_cache or "cpu_cache" in spec.features
        cache = config.cpu_cache_bytes if on else 0
        return execs, cache
    if not gpus:  # a CPU-only box: Samba-CoE runs on the CPU, no cache tier
        if spec.executors == "single":
            return (ExecutorConfig("cpu0", "cpu", sum(e.budget_bytes for e in cpus)),), 0
        return execs, 0
    gpu_total = sum(e.budget_bytes for e in gpus)
    cache = sum(e.budget_bytes for e in cpus) + config.cpu_cache_bytes
    if spec.executors == "single":
        return (ExecutorConfig("gpu0", "gpu", gpu_process_bytes(config, 1)),), cache
    if spec.executors == "gpu-split":
        n = len(execs)
        return tuple(ExecutorConfig(f"gpu{i}", "gpu", gpu_total // n) for i in range(n)), cache
    raise ConfigError("policy", spec.name, f"unknown executor layout {spec.executors!r}")
