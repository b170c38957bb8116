"""What a loaded expert really costs in memory, read from outside Triton.

CPU (embedded server): an expert's footprint is its model processes' proportional set size plus
what the tritonserver process itself grew by when it was loaded (``/proc``, see
``orchestrator.triton.processes``). For accounting, that splits into what the expert adds
(``Footprint.marginal_bytes``: its processes' private pages, USS, plus the server's growth) and
the pages its processes share with other processes (``Footprint.shared_bytes``: RSS - USS, the
Python runtime, numpy and ONNX Runtime libraries every model process maps), which an executor
holds once however many experts it has loaded: the sum of the model processes' PSS never exceeds
the sum of their USS plus the shared pages counted once. Read with another model process loaded
beside it (``ArchProfiler.measure`` does), an expert's USS is what it adds to a server already serving;
alone, library pages no other process maps yet count as private, so its USS overstates that. Peaks during a batch come from the kernel's peak-RSS mark
(``VmHWM``, reset through ``clear_refs``), so no sampler has to catch them.

GPU: per-process device memory from NVML (``nvidia-ml-py``), which includes each model
process's own CUDA context. ``GpuMemoryReader`` is the seam: ``NvmlReader`` on a GPU host, a fake
in tests, so the GPU path runs unchanged wherever NVML answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from orchestrator.errors import CoserveError
from orchestrator.triton import processes


@dataclass(frozen=True)
class Footprint:
    """Memory one loaded expert holds: ``total_bytes`` is what a budget must hold."""

    model_pss_bytes: int
    model_uss_bytes: int
    server_growth_bytes: int
    gpu_bytes: int = 0
    #: RSS - USS of its most sharing model process (every instance maps the same libraries)
    model_shared_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        """Host footprint (PSS of its processes + the server's growth), or GPU bytes on a GPU."""
        if self.gpu_bytes:
            return self.gpu_bytes
        return self.model_pss_bytes + max(0, self.server_growth_bytes)

    @property
    def marginal_bytes(self) -> int:
        """What the expert adds (module doc): its processes' USS + the server's growth; GPU bytes
        on a GPU (each model process's own device memory, its CUDA context included)."""
        if self.gpu_bytes:
            return self.gpu_bytes
        return self.model_uss_bytes + max(0, self.server_growth_bytes)

    @property
    def shared_bytes(self) -> int:
        """The pages its processes share with others (RSS - USS of the most sharing one): what an
        executor holds once beside its experts' ``marginal_bytes``; 0 on a GPU."""
        return 0 if self.gpu_bytes else max(0, self.model_shared_bytes)


class GpuMemoryReader(Protocol):
    """Device memory per process (bytes), as NVML reports it."""

    def device_count(self) -> int: ...

    def used_bytes_by_pid(self) -> Mapping[int, int]: ...


class NoGpuError(CoserveError):
    """GPU profiling was asked for on a machine without a usable GPU."""


class NvmlReader:
    """``GpuMemoryReader`` over NVML. Raises ``NoGpuError`` when NVML or a GPU is missing."""

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError:
            raise NoGpuError(
                "--kind gpu needs NVML: install nvidia-ml-py (pip install nvidia-ml-py) on a host with an NVIDIA GPU"
            ) from None
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # pynvml raises NVMLError subclasses: no driver, no device
            raise NoGpuError(f"--kind gpu: no usable NVIDIA GPU on this machine (NVML: {exc})") from None
        self._nvml = pynvml

    def device_count(self) -> int:
        return int(self._nvml.nvmlDeviceGetCount())

    def used_bytes_by_pid(self) -> Mapping[int, int]:
        used: dict[int, int] = {}
        for index in range(self.device_count()):
            handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
            for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                used[int(proc.pid)] = used.get(int(proc.pid), 0) + int(proc.usedGpuMemory or 0)
        return used


def require_gpu(reader: GpuMemoryReader | None) -> GpuMemoryReader:
    """The reader, checked to see at least one device; ``NvmlReader()`` when None."""
    reader = reader if reader is not None else NvmlReader()
    if reader.device_count() < 1:
        raise NoGpuError("--kind gpu: NVML sees no GPU on this machine")
    return reader


def model_footprint(
    server_pid: int,
    model: str,
    server_pss_before: int,
    gpu: GpuMemoryReader | None = None,
) -> Footprint:
    """The footprint of ``model`` just loaded on the server ``server_pid``."""
    procs = processes.model_processes(server_pid, model)
    growth = processes.memory(server_pid).pss_bytes - server_pss_before
    gpu_bytes = 0
    if gpu is not None:
        by_pid = gpu.used_bytes_by_pid()
        gpu_bytes = sum(by_pid.get(p.pid, 0) for p in procs)
    return Footprint(
        model_pss_bytes=sum(p.pss_bytes for p in procs),
        model_uss_bytes=sum(p.uss_bytes for p in procs),
        server_growth_bytes=growth,
        gpu_bytes=gpu_bytes,
        model_shared_bytes=max((p.rss_bytes - p.uss_bytes for p in procs), default=0),
    )


def reset_peaks(pids: Iterable[int]) -> bool:
    """Reset the peak-RSS mark of every pid; False if any could not be reset."""
    return all([processes.reset_peak_rss(pid) for pid in pids])


def peak_growth_bytes(pids_to_base: Mapping[int, int]) -> int:
    """Sum over pids of (peak RSS since the last reset - that pid's RSS at the reset)."""
    return sum(max(0, processes.peak_rss_bytes(pid) - base) for pid, base in pids_to_base.items())
