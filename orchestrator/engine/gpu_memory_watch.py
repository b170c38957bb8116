"""The measured GPU memory of a GPU executor: from Triton's metrics (an external server) or from
NVML per process (an embedded one).

An external server's processes cannot be seen (``MemorySampler`` measures embedded servers
only), so its executors are accounted from the cost profile. Where the server publishes its GPU
metrics (``orchestrator.triton.gpu_metrics``; the serve config's ``servers[].metrics_url``), a
``GpuMemoryWatch`` corrects a GPU executor's accounting with them, as the sampler does for an
embedded server: every ``interval_s`` it reads the devices' memory in use and hands the growth
over what they used when the watch started (before the initial placement: nothing of ours on
them) to ``Engine.observe_footprint``. The core then counts whatever exceeds its own figures
against the budget (``CoreScheduler.correct_footprint``): the budget stays a promise about
measured memory, and a profile that said too little (an external GPU expert is profiled at its
file size, docs/profiler.md; ONNX Runtime's CUDA context and arena come on top) is corrected.

What the figure is, and is not:

- device-wide: every process on the GPUs the server sees counts (all of them, whatever the
  executor's ``gpus``), so another tenant's growth reads as ours, and memory a tenant frees can
  hide ours: such a figure cannot tell tenants apart. A device using less than at start lowers
  its baseline (what it gave back was not ours), which limits the second case to what the tenant
  freed after our growth. What was on the devices at start (another run's experts left on an
  external server, a CUDA context from an earlier session of that Triton) is never counted. A
  device the baseline did not see counts whole;
- up to ``staleness_s`` old (Triton reads NVML every 2 s by default): each reading is compared
  with the highest the core accounted since that long before it was read (``began_at``), so a
  figure from before an unload does not read as an excess;
- read but not handed on while the engine is not serving (placing, draining, restarting), or
  when it was not serving as the read began, like the sampler's.

On an **embedded** server (whose processes are ours to see) the shell reads NVML's per-process
device memory of the server and its model processes instead (``serve.attach_gpu_memory_watches``):
the same growth over the baseline, but only those processes' (``whole_devices=False``) and fresh
(NVML is read directly). The host memory sampler leaves GPU executors alone: their budget is
device memory, which process sizes on the host do not show.

A read that fails is noted (``notes``) and skipped; without a baseline (the first read failed)
there is no correction at all, and the notes say so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from orchestrator.aio import cancel_and_wait
from orchestrator.errors import CoserveError

log = logging.getLogger(__name__)


def _describe(exc: Exception) -> str:
    """A failed read's text for Status: a reader's own message, else the exception as it is."""
    return str(exc) if isinstance(exc, CoserveError) else repr(exc)


class FootprintSink(Protocol):
    """What the watch needs of the engine."""

    def serving(self) -> bool: ...

    def observe_footprint(
        self, executor: str, measured_bytes: int, reserved_bytes: int = 0, began_at: float | None = None
    ) -> None: ...


class GpuMemoryWatch:
    """Corrects ``executor``'s accounting with ``read()`` (gpu id -> bytes in use; blocking, run
    in a thread; raises ``CoserveError`` when it cannot read). ``start`` reads the baseline."""

    def __init__(
        self,
        sink: FootprintSink,
        executor: str,
        server: str,
        read: Callable[[], Mapping[str, int]],
        *,
        interval_s: float = 1.0,
        staleness_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        source: str = "Triton's nv_gpu_memory_used_bytes",
        whole_devices: bool = True,
    ) -> None:
        self.sink, self.executor, self.server, self.read = sink, executor, server, read
        self.interval_s, self.staleness_s, self.clock = interval_s, staleness_s, clock
        #: what the figure is read from (Status), and whether it is the whole devices' use
        #: (Triton's metrics) or only the server's own processes' (NVML per process)
        self.source, self.whole_devices = source, whole_devices
        #: what the shell took off the executor's configured budget (``Engine.reserved_bytes``)
        self.reserved_bytes = 0
        self.baseline: dict[str, int] | None = None
        self.last_bytes: int | None = None
        self.peak_bytes = 0
        self.readings = 0
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def growth(self, used: Mapping[str, int]) -> int:
        """Bytes the devices use beyond the baseline (a device it lacks counts whole)."""
        base = self.baseline or {}
        return sum(max(0, int(b) - base.get(gpu, 0)) for gpu, b in used.items())

    async def start(self) -> GpuMemoryWatch:
        """Read the baseline (call before the initial placement), then watch until ``stop``."""
        try:
            baseline = dict(await asyncio.to_thread(self.read))
        except Exception as exc:  # CoserveError from the readers; anything else is said too
            self.error = _describe(exc)
        else:
            if baseline:
                self.baseline = baseline
            else:  # no device figures at all: nothing to measure growth against
                self.error = (f"{self.source} has no GPU figure (a server started with "
                              "--allow-gpu-metrics=false, or no GPU visible to it)")
        self._task = asyncio.ensure_future(self._run())
        return self

    async def step(self) -> int | None:
        """One reading, handed to the engine if it serves; the growth read, or None."""
        if self.baseline is None:
            return None
        began_at = self.clock() - self.staleness_s  # the figure may be this old
        # serving before and after the read: one taken across a restart (the server gone or its
        # set half back) would clear a real excess
        serving = self.sink.serving()
        try:
            used = await asyncio.to_thread(self.read)
        except Exception as exc:
            self.error = _describe(exc)
            return None
        self.error = None
        # a device using less than at start gave back memory that was not ours (nothing of ours
        # was on it then): lower the baseline, so that it does not hide our growth later
        assert self.baseline is not None
        for gpu, b in used.items():
            if gpu in self.baseline and b < self.baseline[gpu]:
                self.baseline[gpu] = int(b)
        grown = self.growth(used)
        self.readings += 1
        self.last_bytes = grown
        self.peak_bytes = max(self.peak_bytes, grown)
        if serving and self.sink.serving():
            self.sink.observe_footprint(self.executor, grown, self.reserved_bytes, began_at)
        return grown

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.step()
            except Exception as exc:  # a bug in a reading's handling must not end the watch
                log.exception("GPU memory watch of %s failed a step", self.executor)
                self.error = f"a reading could not be applied: {exc!r}"

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def notes(self) -> list[str]:
        """What ``Status`` says of this watch."""
        where = f"server {self.server}, executor {self.executor}"
        if self.baseline is None:
            return [f"{where}: GPU memory accounted from the cost profile only: {self.source} "
                    f"could not be read at start ({self.error})"]
        what = "whole devices'" if self.whole_devices else "its server's processes'"
        out = [f"{where}: GPU memory measured from {self.source} ({what} growth "
               f"since start: {(self.last_bytes or 0) / 1e6:.1f} MB now, peak {self.peak_bytes / 1e6:.1f} MB; "
               f"read every {self.interval_s:g} s, up to {self.staleness_s:g} s old); host memory not budgeted"]
        if self.error is not None:
            out.append(f"{where}: the last read of {self.source} failed ({self.error})")
        return out
