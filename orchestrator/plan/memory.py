"""The machine's memory, coserve's own overheads, and a candidate layout as a serve config.

Contract: ``Machine`` holds the raw bytes coserve may use (``--cpu-bytes``, one ``--gpu-bytes`` per
GPU device). ``Overheads`` is what coserve itself costs besides the experts, read from the cost
profile (or, for a simulator preset, from the preset), never guessed from file sizes:

- *per expert*: on the embedded Triton every loaded expert is its own model process (CPU) with
  its own CUDA context (GPU, the Python-based backend); the profiler measures what that process
  adds inside the expert's footprint (``weight_bytes``), so the plan subtracts nothing more per
  expert and only reports it (``overhead_fixed_bytes`` is the fixed part);
- *per executor*: each embedded executor's server holds ``server_idle_bytes`` outside its budget
  (taken from the raw bytes here) and, inside its budget, keeps growing by
  ``server_growth_bytes`` while serving and holds once the pages its model processes share
  (``shared_bytes``): ``coserve serve`` takes both off (``ProcessorSpec.executor_reserve_bytes``)
  before the experts get the rest, so the plan simulates the budget less them, as the engine runs it;
- *per GPU executor process*: its CUDA context where the executor runs its experts in its own
  process (the paper's in-process design, the presets' ``gpu_context_bytes``; also the native ONNX
  Runtime backend: give ``gpu_context_bytes`` explicitly).

``candidate_config`` turns a ``Candidate`` (executor counts, how CPU memory is split between CPU
executors and a cache tier, an optional cap on resident experts per GPU executor) into the
``ServeConfig`` to write and the one to simulate; it returns None when a layout does not fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from orchestrator.core.features import Features, with_flags
from orchestrator.core.graph import DependencyGraph
from orchestrator.core.profile import CostProfile
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.errors import ConfigError


@dataclass(frozen=True)
class Machine:
    """The raw bytes coserve may use: host memory and each GPU device's memory."""

    cpu_bytes: int
    gpu_bytes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.cpu_bytes < 1:
            raise ConfigError("--cpu-bytes", str(self.cpu_bytes), "must be >= 1")
        for b in self.gpu_bytes:
            if b < 1:
                raise ConfigError("--gpu-bytes", str(b), "must be >= 1")


@dataclass(frozen=True)
class Overheads:
    """What coserve itself costs besides the experts (bytes), and where each figure came from."""

    gpu_context_bytes: int = 0  # per GPU executor process, from its device (in-process design)
    cpu_executor_bytes: int = 0  # per CPU executor, from host memory (its server's idle PSS)
    gpu_server_host_bytes: int = 0  # per GPU executor, from host memory (its server's idle PSS)
    growth_bytes: Mapping[str, int] = field(default_factory=dict)  # per kind, inside the budget
    notes: tuple[str, ...] = ()

    def executor_bytes(self, kind: str) -> int:
        return self.gpu_context_bytes if kind == "gpu" else self.cpu_executor_bytes


def preset_overheads(context_bytes: int) -> Overheads:
    """A simulator preset: the paper's in-process executors, one CUDA context per GPU executor."""
    return Overheads(
        gpu_context_bytes=context_bytes,
        notes=(
            f"in-process executors (the paper's design, the preset): one CUDA context per GPU executor "
            f"process, {context_bytes / 1e9:.2f} GB each (preset gpu_context_bytes), taken from each "
            "device; no per-expert process",
        ),
    )


def profile_overheads(profile: CostProfile, gpu_context_bytes: int | None = None) -> Overheads:
    """A measured profile: the embedded Triton's overheads (module doc). ``gpu_context_bytes``: a
    per-executor CUDA context instead (the native ONNX Runtime backend)."""
    notes: list[str] = []
    cpu = profile.processors.get("cpu")
    gpu = profile.processors.get("gpu")
    growth = {k: p.executor_reserve_bytes() for k, p in profile.processors.items()}
    if cpu is not None:
        fixed = cpu.overhead_fixed_bytes
        what = (
            "what it adds (its private pages and the server's growth) is"
            if cpu.shared_bytes is not None
            else "its memory is in"
        )
        notes.append(
            f"CPU: each loaded expert is its own model process on the embedded Triton; {what} the "
            "expert's measured weight_bytes"
            + (f" (fixed part {fixed / 1e6:.1f} MB)" if fixed else "")
            + f"; each CPU executor's server: {(cpu.server_idle_bytes or 0) / 1e6:.1f} MB idle (outside "
            f"the budget, taken from --cpu-bytes) + {(cpu.server_growth_bytes or 0) / 1e6:.1f} MB growth "
            f"+ {(cpu.shared_bytes or 0) / 1e6:.1f} MB of pages its model processes share "
            "(inside the budget; coserve serve takes them off)"
        )
    if gpu is not None or gpu_context_bytes is not None:
        if gpu_context_bytes is None:
            notes.append(
                "GPU: the embedded Python-based backend runs each expert in its own process, so each "
                "expert carries a CUDA context (~0.5 GB on an H200), measured inside its weight_bytes "
                "(NVML); nothing more per executor on the device"
            )
        else:
            notes.append(
                f"GPU: one CUDA context per executor ({gpu_context_bytes / 1e9:.2f} GB, given), as the "
                "native ONNX Runtime backend runs experts in the server's own process"
            )
    return Overheads(
        gpu_context_bytes=gpu_context_bytes or 0,
        cpu_executor_bytes=int(cpu.server_idle_bytes or 0) if cpu is not None else 0,
        gpu_server_host_bytes=int(gpu.server_idle_bytes or 0) if gpu is not None else 0,
        growth_bytes=growth,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class Candidate:
    """One layout to try.

    ``gpus_per_device`` GPU executors on every GPU device, splitting its memory evenly;
    ``cpu_shares`` one fraction of the host memory per CPU executor; ``cache_share`` the fraction
    kept as the CPU cache tier for GPU loads (feature ``cpu_cache``); ``gpu_resident`` caps each
    GPU executor at that many resident experts plus one max batch (None: all its memory);
    ``features`` beyond-paper flags added to the policy's own."""

    gpus_per_device: int
    cpu_shares: tuple[float, ...]
    cache_share: float = 0.0
    gpu_resident: int | None = None
    features: tuple[str, ...] = ()

    def counts(self, devices: int) -> tuple[int, int]:
        return self.gpus_per_device * devices, len(self.cpu_shares)

    def label(self, devices: int) -> str:
        g, c = self.counts(devices)
        parts = []
        if g:
            parts.append(f"{g} GPU")
        if c:
            parts.append(f"{c} CPU")
        text = " + ".join(parts) or "nothing"
        if c > 1 and len(set(self.cpu_shares)) > 1:
            text += " (" + "/".join(f"{s:.0%}" for s in self.cpu_shares) + ")"
        if self.cache_share:
            text += f", cache {self.cache_share:.0%}"
        if self.gpu_resident is not None:
            text += f", {self.gpu_resident} resident/GPU"
        if self.features:
            text += ", +" + "+".join(self.features)
        return text


def even_shares(n: int) -> tuple[float, ...]:
    return tuple(1.0 / n for _ in range(n)) if n else ()


def batch_reserve_bytes(profile: CostProfile, kind: str) -> int:
    """One max batch of the hungriest architecture on ``kind`` (what the core keeps free)."""
    out = 0
    for per in profile.architectures.values():
        c = per.get(kind)
        if c is not None:
            out = max(out, c.activation_bytes_per_item * c.max_batch)
    return out


def typical_expert_bytes(graph: DependencyGraph, kind: str) -> int:
    """The usage-weighted mean footprint of the experts that run on ``kind`` (0: none)."""
    total = weight = 0.0
    for e in graph.experts:
        b = graph.bytes(e, kind)
        if b:
            p = max(graph.usage_prob(e), 1e-9)
            total += p * b
            weight += p
    return int(total / weight) if weight else 0


@dataclass(frozen=True)
class Layout:
    """A candidate's two configs: ``written`` (what the serve config says) and ``simulated`` (what
    the engine runs: each embedded executor's budget less its server's growth)."""

    written: ServeConfig
    simulated: ServeConfig


def candidate_config(
    cand: Candidate,
    machine: Machine,
    overheads: Overheads,
    profile: CostProfile,
    graph: DependencyGraph,
    policy: str,
    base_features: Features | None = None,
) -> Layout | None:
    """The serve config of ``cand`` (module doc), or None when it does not fit: an executor whose
    budget (less its server's growth) cannot hold its smallest expert and one max batch."""
    devices = len(machine.gpu_bytes)
    n_gpu, n_cpu = cand.counts(devices)
    if n_gpu + n_cpu == 0 or (cand.gpus_per_device and not devices):
        return None
    execs: list[ExecutorConfig] = []
    idx = 0
    for d, dev_bytes in enumerate(machine.gpu_bytes):
        n = cand.gpus_per_device
        if n == 0:
            continue
        per = (dev_bytes - n * overheads.gpu_context_bytes) // n
        if cand.gpu_resident is not None:
            cap = cand.gpu_resident * typical_expert_bytes(graph, "gpu") + batch_reserve_bytes(profile, "gpu")
            per = min(per, cap + overheads.growth_bytes.get("gpu", 0))
        for _ in range(n):
            execs.append(ExecutorConfig(f"gpu{idx}", "gpu", int(per)))
            idx += 1
        del d
    host = machine.cpu_bytes - n_cpu * overheads.cpu_executor_bytes - n_gpu * overheads.gpu_server_host_bytes
    shares = cand.cpu_shares
    cache_share = cand.cache_share if n_gpu else 0.0  # a cache tier only serves GPU loads
    if shares:
        total = sum(shares)
        # the CPU executors get what the cache tier leaves, in their given proportions
        shares = tuple(s / total * (1.0 - cache_share) for s in shares)
    for i, s in enumerate(shares):
        execs.append(ExecutorConfig(f"cpu{i}", "cpu", int(host * s)))
    cache = int(host * cache_share)
    if host <= 0 and (n_cpu or cache):
        return None
    smallest = {
        kind: min((graph.bytes(e, kind) or 0 for e in graph.experts if graph.bytes(e, kind)), default=0)
        for kind in ("gpu", "cpu")
    }
    simulated: list[ExecutorConfig] = []
    for ex in execs:
        run = ex.budget_bytes - overheads.growth_bytes.get(ex.kind, 0)
        if smallest[ex.kind] == 0 or run < smallest[ex.kind] + batch_reserve_bytes(profile, ex.kind):
            return None
        simulated.append(replace(ex, budget_bytes=run))
    feats = with_flags(base_features or Features(), tuple(cand.features))
    if cache:
        feats = replace(feats, cpu_cache=True)
    written = ServeConfig(
        executors=tuple(execs),
        policy=policy,
        cpu_cache_bytes=cache,
        features=feats,
        gpu_context_bytes=overheads.gpu_context_bytes,
    )
    return Layout(written, replace(written, executors=tuple(simulated)))
