"""The measurements behind a cost profile, taken through the real Triton (shell code: I/O here).

For one architecture on one instance kind, with experts of that architecture from a repository:

1. loads with the ONNX file dropped from the page cache (cold) and with it cached (warm), each
   followed by a confirmed unload whose time until the memory is back is ``unload_time_s``; each
   warm load's CPU seconds on the server side (its model process, the server: the work the
   simulator's shared-cores model gives a load), the cores this process used meanwhile (the
   adapter's process watch) and its first batch (one item) after the load;
2. after each warm load, its first inference and a memory pass over the batch sizes: the peak
   each batch size adds (one sample per size per load: how the allocator lays out a fresh model
   process's memory differs from load to load, so the figure pools several loads); then the
   footprint of the loaded expert, which has now run every batch size (model process
   PSS/USS/shared pages + the server's growth, read with another expert's model process loaded
   beside it, see ``profiler.memory``; on GPU the NVML bytes of its processes);
3. a batch-size sweep on the loaded expert in interleaved rounds (each round one inference of
   every size, the figure of a size the median over rounds);
4. 1, 2 and 4 loads of different experts at once (as many as there are experts), on one server
   and spread over servers, each level repeated in interleaved rounds, which sets how many loads
   this box really runs in parallel; then the same spread loads while a peer server computes.

Everything statistical is in ``profiler.fit``; everything about memory in ``profiler.memory``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orchestrator.errors import ModelUnloadTimeoutError
from orchestrator.triton import processes
from orchestrator.triton.adapter import TritonAdapter, UnloadResult
from orchestrator.triton.launcher import EmbeddedTriton
from orchestrator.triton.model_config import ModelConfig
from profiler import fit
from profiler.memory import Footprint, GpuMemoryReader, model_footprint, peak_growth_bytes, reset_peaks


@dataclass(frozen=True)
class Plan:
    """How much to measure: repetitions per figure, batch sizes, concurrency levels."""

    #: cold loads, and warm loads (each with a memory pass), per (architecture, kind)
    load_reps: int = 10
    #: interleaved sweep rounds: each times one inference of every batch size
    infer_reps: int = 40
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    concurrency: tuple[int, ...] = (1, 2, 4)
    #: rounds of the loads-at-once steps (one server, spread, while computing): each round runs
    #: every level once, so that what else the box does meanwhile falls on every level alike
    concurrency_reps: int = 5
    #: inferences per batch size in a memory pass (after one that sets up the size's buffers)
    memory_reps: int = 3
    #: rounds of the spread loads while a peer computes (the profile's load time)
    busy_reps: int = 7

    @classmethod
    def quick(cls) -> Plan:
        return cls(load_reps=2, infer_reps=5, batch_sizes=(1, 4, 16), concurrency=(1, 2), concurrency_reps=1,
                   memory_reps=2, busy_reps=2)

    def describe(self) -> str:
        """The plan in words, as a profile records it (``measured.plan``)."""
        return (
            f"{self.load_reps} loads per figure, {self.infer_reps} interleaved rounds of the batch sizes "
            f"{list(self.batch_sizes)}, a memory pass ({self.memory_reps} inferences per size) after each warm "
            f"load, {list(self.concurrency)} loads at once in {self.concurrency_reps} rounds, "
            f"{self.busy_reps} rounds of loads while a peer computes"
        )

    def steps(self) -> int:
        """Progress-bar steps per (architecture, kind)."""
        return 2 * self.load_reps + 3  # cold and warm loads, the sweep, loads at once, while computing


@dataclass
class ArchMeasurement:
    """Raw results for one (architecture, kind); ``profiler.build`` turns them into a profile."""

    arch: str
    kind: str
    expert: str
    file_bytes: int
    cold_load_s: list[float] = field(default_factory=list)
    warm_load_s: list[float] = field(default_factory=list)
    unload_s: list[float] = field(default_factory=list)
    unload_call_s: list[float] = field(default_factory=list)
    #: k -> the wall times of k loads at once on one server, one per round
    concurrent_wall_s: dict[int, list[float]] = field(default_factory=dict)
    #: k loads at once, one on each of k embedded servers (the serving layout: one executor per
    #: server), one wall time per round; empty when the profile runs against an external server
    spread_wall_s: dict[int, list[float]] = field(default_factory=dict)
    #: k -> per-load seconds of warm loads run k at once, one per embedded server, while a peer
    #: server computes max batches back to back (how serving loads: several executors load and
    #: infer on the same cores); empty against an external server
    busy_load_s: dict[int, list[float]] = field(default_factory=dict)
    batch_latency_s: dict[int, list[float]] = field(default_factory=dict)
    #: batch size -> the peak growth of each memory pass (one per warm load)
    activation_bytes: dict[int, list[int]] = field(default_factory=dict)
    footprints: list[Footprint] = field(default_factory=list)
    #: the expert kept loaded beside the measured one while its footprints were read (None: alone)
    companion: str | None = None
    cold_cache_dropped: bool = True
    first_infer_s: float | None = None
    #: per cold and warm load: CPU seconds it took on the server side (model process + server);
    #: empty where the processes cannot be seen (external server)
    load_cpu_s: list[float] = field(default_factory=list)
    #: per cold and warm load: this process's CPU seconds during it (``time.process_time``: the
    #: kernel's nanosecond account, not 10 ms ticks) over its wall time (the cores the adapter's
    #: process watch used); empty where ``load_cpu_s`` is
    watch_cores: list[float] = field(default_factory=list)
    #: per confirmed unload: its CPU seconds (model process exit, server, this client's watch)
    unload_cpu_s: list[float] = field(default_factory=list)
    #: per warm load: the seconds of the first one-item batch after it
    first_run_s: list[float] = field(default_factory=list)


def drop_from_page_cache(path: Path) -> bool:
    """Ask the kernel to drop ``path``'s cached pages (``POSIX_FADV_DONTNEED``); False if it cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    except (OSError, AttributeError):
        return False
    finally:
        os.close(fd)


class ArchProfiler:
    """Measures one (architecture, kind) on one server (see the module docstring)."""

    def __init__(
        self,
        adapter: TritonAdapter,
        server: EmbeddedTriton | None,
        repo: Path,
        plan: Plan,
        tick: Callable[[str], None] = lambda _: None,
        gpu: GpuMemoryReader | None = None,
        peers: Sequence[TritonAdapter] = (),
    ) -> None:
        self.adapter, self.server, self.repo, self.plan, self.tick, self.gpu = adapter, server, repo, plan, tick, gpu
        #: adapters of further embedded servers on this box, for loads spread across servers
        self.peers = tuple(peers)
        #: unloads Triton left UNLOADING with the model's processes gone (``_tolerant_unload``)
        self.stuck_unloads = 0

    def _config(self, name: str, kind: str) -> ModelConfig:
        return ModelConfig.read(self.repo / name).with_instances(kind, 1)

    async def _load(self, name: str, kind: str, adapter: TritonAdapter | None = None) -> float:
        began = time.perf_counter()
        await (adapter or self.adapter).load(name, self._config(name, kind))
        return time.perf_counter() - began

    async def _loads_at_once(self, kind: str, placed: Sequence[tuple[str, TritonAdapter]]) -> tuple[float, list[float]]:
        """Load every (expert, server) of ``placed`` at once, then unload them: the wall time of
        the loads and each load's own time."""
        began = time.perf_counter()
        took = await asyncio.gather(*(self._load(n, kind, a) for n, a in placed))
        wall = time.perf_counter() - began
        await asyncio.gather(*(self._tolerant_unload(n, a) for n, a in placed))
        return wall, list(took)

    async def _tolerant_unload(self, name: str, adapter: TritonAdapter) -> UnloadResult | None:
        """``adapter.unload(name)``; None where Triton left the index UNLOADING past the unload's
        deadline with the model's processes gone (seen once on this 2-core box under a load
        average of ~4): its memory is back (docs/triton.md), so the profile goes on,
        counts it (``stuck_unloads``; the profile's ``measured.stuck_unloads``) and takes no
        sample from it."""
        try:
            return await adapter.unload(name)
        except ModelUnloadTimeoutError:
            probe = adapter.process_probe
            if probe is None or probe(name):
                raise
            self.stuck_unloads += 1
            return None

    async def _unload(self, m: ArchMeasurement, name: str) -> None:
        stubs = [p.pid for p in self.server.model_processes(name)] if self.server is not None else []
        before = self._unload_cpu_mark(stubs)
        result = await self._tolerant_unload(name, self.adapter)
        if result is None:
            return
        m.unload_s.append(result.gone_seconds)
        m.unload_call_s.append(result.call_seconds)
        after = self._unload_cpu_mark(stubs)
        if before is not None and after is not None:
            m.unload_cpu_s.append(max(0.0, after - before))

    def _unload_cpu_mark(self, stubs: Sequence[int]) -> float | None:
        """CPU seconds so far of the server with its reaped children, of ``stubs`` not yet reaped
        (a zombie keeps its figures) and of this process: the difference across an unload is its
        CPU work (the model process's exit, the server's clean-up, this client's watch), since a
        stub reaped in between moves its whole time into the server's children's figure."""
        if self.server is None or self.server.pid is None:
            return None
        server = process_cpu_s(self.server.pid, children=True)
        if server is None:
            return None
        return server + sum(process_cpu_s(pid) or 0.0 for pid in stubs) + time.process_time()

    async def measure(
        self, arch: str, kind: str, experts: Sequence[str], companion: str | None = None
    ) -> ArchMeasurement:
        """Measure ``experts[0]`` (module doc); ``companion``: another expert kept loaded on the
        server during the warm loads, so that the footprint read after each is what the expert
        adds beside another model process (``profiler.memory``; ``run._companion`` picks it).
        Without one the expert's USS counts library pages no other model process maps yet as
        its own: larger, still safe."""
        name = experts[0]
        model_file = self.repo / name / "1" / "model.onnx"
        m = ArchMeasurement(arch, kind, name, model_file.stat().st_size)
        for _ in range(self.plan.load_reps):
            m.cold_cache_dropped &= drop_from_page_cache(model_file)
            # a cold load's CPU work is a warm one's (reading the file waits, it does not
            # compute): both count, for more samples of a figure read in 10 ms ticks
            m.cold_load_s.append(await self._cpu_timed_load(m, name, kind))
            await self._unload(m, name)
            self.tick(f"{arch}/{kind} cold load")
        if companion is not None and companion != name and self.server is not None:
            await self._load(companion, kind)
            m.companion = companion
        for rep in range(self.plan.load_reps):
            before = self._server_pss()
            m.warm_load_s.append(await self._cpu_timed_load(m, name, kind))
            # ONNX Runtime allocates on its first run (+~9 MB for a 1.5 MB expert, measured) and
            # keeps it: the footprint a budget must hold is the one after a first inference. That
            # first run is also slower than later ones (~0.03 s against ~0.002 s for a classifier
            # here): a cost every switch pays, timed here.
            m.first_run_s.append(await self._first_run(name))
            await self._memory_pass(m, name)
            # the footprint after the memory pass has run every batch size: what an expert holds
            # once it has served. The allocator keeps what the larger batches took (measured on the
            # bench board's experts, beside a companion: a classifier's USS 39.9 MB after its first
            # run, 43.4 after batches up to 16; a detector's 58.4 and 79.4), and read after the
            # first run only, experts loaded together went 3% over their budget in serve_bench
            if self.server is not None and self.server.pid is not None:
                m.footprints.append(model_footprint(self.server.pid, name, before, self.gpu))
            if rep + 1 < self.plan.load_reps:
                await self._unload(m, name)
            self.tick(f"{arch}/{kind} warm load")
        if m.companion is not None:
            await self._tolerant_unload(m.companion, self.adapter)
        await self._sweep(m, name)
        await self._unload(m, name)
        await self._concurrency(m, kind, experts)
        await self._busy_loads(m, kind, experts)
        return m

    async def _busy_loads(self, m: ArchMeasurement, kind: str, experts: Sequence[str]) -> None:
        """Warm loads ``k`` at once spread one per server, while a peer computes back to back.

        Serving loads while other executors load and compute on the same cores: on a CPU box a
        load is CPU work (process start, imports, ONNX Runtime session), so it takes longer then
        (measured on the 100-type bench board: 0.24-0.35 s while serving against 0.18 s on an idle
        box), and the simulator, which gives each of the box's load channels a load in
        ``load_time_s`` and overlaps compute for free, predicted 1.5-1.8x the real throughput from
        the idle figure (benchmarks/results/serve_bench.details.json). The profile's load time is
        the one at the box's channel count (``profiler.build``)."""
        if not self.peers:
            return
        name = experts[0]
        # the peer computes with another expert of the architecture; the loads measured are of
        # ``name``, on each server (with one expert only, on this server alone: k = 1)
        spare = experts[1] if len(experts) > 1 else name
        peer = self.peers[0]
        servers = (self.adapter, *self.peers) if spare != name else (self.adapter,)
        await self._load(spare, kind, peer)
        config = ModelConfig.read(self.repo / spare)
        batch = np.zeros((max(1, config.max_batch_size), *config.inputs[0].dims), dtype=np.float32)
        stop = asyncio.Event()

        async def compute() -> None:
            while not stop.is_set():
                await peer.infer(spare, {config.inputs[0].name: batch})

        busy = asyncio.create_task(compute())
        levels = [k for k in self.plan.concurrency if k <= len(servers)]
        try:
            await asyncio.sleep(0.2)  # the loop runs before the first load starts
            # rounds over the levels, not one level after the other: whatever else the box does
            # meanwhile falls on every level alike (the profile's figure is one level's)
            for _ in range(self.plan.busy_reps):
                for k in levels:
                    _, took = await self._loads_at_once(kind, [(name, a) for a in servers[:k]])
                    m.busy_load_s.setdefault(k, []).extend(took)
            self.tick(f"{m.arch}/{m.kind} loads while computing")
        finally:
            stop.set()
            await busy
            await self._tolerant_unload(spare, peer)

    async def _cpu_timed_load(self, m: ArchMeasurement, name: str, kind: str) -> float:
        """Load ``name`` and record its CPU work (``load_cpu_s``, ``watch_cores``); its seconds."""
        cpu_before, own_before = self._triton_cpu_s(None), time.process_time()
        took = await self._load(name, kind)
        cpu_after, own_after = self._triton_cpu_s(name), time.process_time()
        if cpu_before is not None and cpu_after is not None:
            m.load_cpu_s.append(max(0.0, cpu_after - cpu_before))
            # this process did little but watch the load (the adapter polls /proc for the
            # model's process, as serving's adapters do): that watch's cores while it ran
            m.watch_cores.append(max(0.0, own_after - own_before) / max(took, 1e-9))
        return took

    async def _first_run(self, name: str) -> float:
        config = ModelConfig.read(self.repo / name)
        batch = np.zeros((1, *config.inputs[0].dims), dtype=np.float32)
        began = time.perf_counter()
        await self.adapter.infer(name, {config.inputs[0].name: batch})
        return time.perf_counter() - began

    def _triton_cpu_s(self, loaded: str | None) -> float | None:
        """CPU seconds so far of the server (itself, not its reaped children: an earlier unload's
        process may be reaped at any time) and of ``loaded``'s model processes; None against an
        external server. The difference across one load is the load's CPU work on the server
        side (a model process starts with the load, so before it ``loaded`` is None: it has none)."""
        if self.server is None or self.server.pid is None:
            return None
        total = process_cpu_s(self.server.pid)
        if total is None:
            return None
        if loaded is not None:
            total += sum(process_cpu_s(p.pid) or 0.0 for p in self.server.model_processes(loaded))
        return total

    def _server_pss(self) -> int:
        if self.server is None or self.server.pid is None:
            return 0
        return processes.memory(self.server.pid).pss_bytes

    def _batches(self, name: str) -> dict[int, dict[str, np.ndarray]]:
        """The sweep's inputs of ``name``: batch size -> its input tensors (random, seeded)."""
        config = ModelConfig.read(self.repo / name)
        shape = config.inputs[0].dims
        limit = max(1, config.max_batch_size)
        rng = np.random.default_rng(0)
        return {
            n: {config.inputs[0].name: rng.random((n, *shape), dtype=np.float32)}
            for n in sorted({min(n, limit) for n in self.plan.batch_sizes})
        }

    async def _memory_pass(self, m: ArchMeasurement, name: str) -> None:
        """The peak each batch size adds to the loaded ``name`` (its model process and the server):
        per size, one run to set up its buffers, then the kernel's peak-RSS mark (reset) over
        ``memory_reps`` runs against the resident size at the reset. One sample per size per
        pass; the build takes each size's mean over the passes (one per warm load)."""
        pids = self._pids(name)
        if not pids:
            return
        for n, inputs in self._batches(name).items():
            await self.adapter.infer(name, inputs)  # the first run of a size sets up its buffers
            base = {pid: processes.rss_bytes(pid) for pid in pids}
            if not reset_peaks(pids):
                return
            for _ in range(self.plan.memory_reps):
                await self.adapter.infer(name, inputs)
            m.activation_bytes.setdefault(n, []).append(peak_growth_bytes(base))

    async def _sweep(self, m: ArchMeasurement, name: str) -> None:
        """Batch latency of every size, in ``infer_reps`` interleaved rounds (one inference of
        each size per round, after one unmeasured run of each): a slow spell of the box (another
        process waking, a frequency change) then falls on every size alike, and the medians drop
        it, where measured size after size it fell on some sizes only and bent the line (K, B
        and the max batch read from them)."""
        batches = self._batches(name)
        for inputs in batches.values():
            first = time.perf_counter()
            await self.adapter.infer(name, inputs)  # the first run of a size sets up its buffers
            if m.first_infer_s is None:
                m.first_infer_s = time.perf_counter() - first
        for _ in range(self.plan.infer_reps):
            for n, inputs in batches.items():
                began = time.perf_counter()
                await self.adapter.infer(name, inputs)
                m.batch_latency_s.setdefault(n, []).append(time.perf_counter() - began)
        self.tick(f"{m.arch}/{m.kind} batch sweep")

    def _pids(self, name: str) -> list[int]:
        if self.server is None or self.server.pid is None:
            return []
        return [p.pid for p in self.server.model_processes(name)] + [self.server.pid]

    async def _concurrency(self, m: ArchMeasurement, kind: str, experts: Sequence[str]) -> None:
        """k loads at once on one server, then spread one per server, each level once per round
        (``concurrency_reps`` rounds; rounds, not level after level, for the reason of
        ``_busy_loads``'s)."""
        one = [k for k in self.plan.concurrency if k <= len(experts)]
        # Serving runs one executor per server, so the box's storage channels are what loads
        # spread over servers allow. The two figures differ with what else runs: with the box
        # loaded (load average ~8), 2 load+unload cycles at once on one server took 0.8-1.0x the
        # time of 2 in a row and 1 on each of 2 servers 0.5-0.6x; on a quiet box 0.55x and 0.7x
        # (6 repetitions each). The one-server figure alone read 1 in a loaded quick profile.
        servers = (self.adapter, *self.peers)
        spread = [k for k in self.plan.concurrency if k <= len(servers) and (k == 1 or self.peers)]
        for _ in range(self.plan.concurrency_reps):
            for k in one:
                wall, _ = await self._loads_at_once(kind, [(n, self.adapter) for n in experts[:k]])
                m.concurrent_wall_s.setdefault(k, []).append(wall)
            for k in spread:
                placed = [(experts[i % len(experts)], servers[i]) for i in range(k)]
                wall, _ = await self._loads_at_once(kind, placed)
                m.spread_wall_s.setdefault(k, []).append(wall)
        self.tick(f"{m.arch}/{m.kind} loads at once")


def process_cpu_s(pid: int, children: bool = False) -> float | None:
    """User + system CPU seconds of process ``pid`` itself, with ``children`` also those of its
    children it has reaped (``/proc/PID/stat``; clock-tick resolution, 10 ms here); None if it
    has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = sum(int(v) for v in fields[11:15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def figure(values: Sequence[float]) -> fit.Figure:
    return fit.Figure.of(list(values))
