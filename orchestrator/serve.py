"""The composition root of ``coserve serve``: serve config -> Triton servers + engine + factory API.

``run_service`` starts, in order: the embedded tritonservers the config names (one per executor by
default; external ones are reached by URL), the engine over a ``TritonBackend``, and the gRPC
front end (health NOT_SERVING until the engine's initial placement is loaded). It serves until
``stop`` is set (with ``metrics: {listen: ...}`` a Prometheus endpoint serves ``orchestrator.metrics``
beside it; with ``tls:`` the API is TLS only), then stops gracefully: health NOT_SERVING, no new
requests, every accepted one answered (within ``drain_timeout_s``), front end stopped, engine
closed, embedded servers stopped. Whatever was started is stopped on any error too.

Memory: with ``memory_sampler`` on (the default), a ``MemorySampler`` measures every executor on
an embedded server from before its initial placement on (poked at each load, unload and restart)
and each reading goes to ``Engine.observe_footprint``: what the servers really hold beyond the
cost profile's figures is counted against the budget (``attach_memory_sampler``). A GPU executor
on an external server whose spec names a ``metrics_url`` is corrected the same way from Triton's
GPU metrics (``attach_gpu_memory_watches``); other external executors stay on the profile's figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.coe import CoEDefinition, load_coe
from orchestrator.config_reader import read_yaml_file
from orchestrator.core.layout import executors_for
from orchestrator.core.profile import CostProfile, parse_profile
from orchestrator.core.serve_config import ServeConfig
from orchestrator.engine.engine import Engine
from orchestrator.engine.gpu_memory_watch import GpuMemoryWatch
from orchestrator.engine.memory_sampler import Footprint, MemorySampler
from orchestrator.engine.triton_backend import ExecutorTarget, TritonBackend
from orchestrator.engine.types import InspectionService
from orchestrator.errors import CoserveError
from orchestrator.frontend.server import InspectionServer, tls_credentials
from orchestrator.metrics.service_metrics import ServiceMetrics
from orchestrator.serve_file import ServeFile
from orchestrator.triton import processes
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.gpu_metrics import (
    TRITON_GPU_METRICS_INTERVAL_S,
    GpuMetricsError,
    read_gpu_memory_used,
)
from orchestrator.triton.launcher import EmbeddedServerControl, EmbeddedTriton
from orchestrator.verdicts.serving import VerdictLog

if TYPE_CHECKING:
    from profiler.memory import GpuMemoryReader

T = TypeVar("T")


@dataclass
class Service:
    """The running pieces (for callers that want to look: demo, bench, tests)."""

    spec: ServeFile
    coe: CoEDefinition
    profile: CostProfile
    engine: Engine
    frontend: InspectionServer
    embedded: dict[str, EmbeddedTriton] = field(default_factory=dict)
    metrics: ServiceMetrics | None = None  # the metrics endpoint, where the config asks for one
    verdict_log: VerdictLog | None = None  # the verdict log, unless the config turns it off
    sampler: MemorySampler | None = None  # measures the embedded executors (module doc)

    @property
    def address(self) -> str:
        return self.frontend.address


def profile_path(spec: ServeFile) -> Path:
    return spec.profile or spec.repo / "profile.yaml"


def load_serving_profile(spec: ServeFile, unload_mode: str | None) -> CostProfile:
    """The cost profile the config names (or ``<repo>/profile.yaml``), checked for this server's mode."""
    from profiler.run import check_unload_mode

    path = profile_path(spec)
    if not path.is_file():
        raise CoserveError(
            f"{spec.source}: profile: no cost profile at {path}; measure one with "
            f"`coserve profile --coe {spec.coe} --repo {spec.repo} --out {path}`"
        )
    profile = parse_profile(read_yaml_file(path), str(path))
    if unload_mode is not None:
        check_unload_mode(profile, unload_mode, str(path))
    return profile


def experts_config(spec: ServeFile, profile: CostProfile, embedded: set[str]) -> ServeConfig:
    """The serve config with each embedded executor's budget reduced by what its server itself
    keeps growing by while serving and by the pages its model processes share, held once
    however many experts are loaded (the profile's ``server_growth_bytes`` and ``shared_bytes``,
    ``ProcessorSpec.executor_reserve_bytes``): the budget promises the measured footprint
    (server growth + model processes' PSS), so the experts get the rest, each at what it adds."""
    execs = []
    for i, ex in enumerate(spec.config.executors):
        growth = profile.processor(ex.kind).executor_reserve_bytes() if spec.executor_server[ex.name] in embedded else 0
        if growth >= ex.budget_bytes:
            raise CoserveError(
                f"{spec.source}: executors[{i}].budget_bytes: {ex.budget_bytes} B does not cover the server's own "
                f"growth while serving and the pages its model processes share ({growth} B, measured by the "
                "cost profile)"
            )
        execs.append(replace(ex, budget_bytes=ex.budget_bytes - growth))
    return replace(spec.config, executors=tuple(execs))


def reserved_bytes(engine: Engine, spec: ServeFile) -> dict[str, int]:
    """Per executor of the engine (the policy's layout), what ``experts_config`` took off its
    configured budget (its server's growth and the pages its model processes share); executors
    with none left out."""
    raw = {e.name: e.budget_bytes for e in executors_for(engine.core.spec, spec.config)[0]}
    out = {n: raw.get(n, 0) - engine.core.pool(n).budget_bytes for n in engine.core.executor_names()}
    return {n: r for n, r in out.items() if r > 0}


def _pid_of(triton: EmbeddedTriton) -> Callable[[], int | None]:
    """The server's current pid (a new one after a watchdog restart)."""
    return lambda: triton.pid


def attach_memory_sampler(
    engine: Engine,
    embedded: Mapping[str, EmbeddedTriton],
    spec: ServeFile,
    *,
    keep_history: bool = False,
) -> MemorySampler | None:
    """Start a ``MemorySampler`` over ``engine``'s executors that run on ``embedded`` servers
    (followed across restarts), poked by the engine at every load, unload and restart, whose
    readings correct the engine's accounting (``Engine.observe_footprint``, with each
    executor's reserve: ``Engine.reserved_bytes``, what ``experts_config`` took off its budget).
    Call it before the initial placement (the servers' idle memory is read at start). None when
    no executor runs on an embedded server. The caller stops it."""
    loop = asyncio.get_running_loop()
    servers: dict[str, Callable[[], int | None]] = {}
    reserved = engine.reserved_bytes  # set by run_service before the engine is handed out
    for name in engine.core.executor_names():
        triton = embedded.get(spec.executor_server.get(name, ""))
        # a GPU executor's budget is device memory, which host process sizes do not show
        # (attach_gpu_memory_watches measures it)
        if triton is None or triton.pid is None or engine.core.executor_kind(name) == "gpu":
            continue
        servers[name] = _pid_of(triton)
    if not servers:
        return None

    def apply(fp: Footprint, began_at: float) -> None:  # on the event loop
        if not engine.serving():  # placing, draining or restarting: figures in flux
            return
        for name in servers:
            engine.observe_footprint(name, fp.executor_bytes(name), reserved.get(name, 0), began_at)

    def on_reading(fp: Footprint, began_at: float) -> None:  # in the sampler's thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to correct
            loop.call_soon_threadsafe(apply, fp, began_at)

    sampler = MemorySampler(servers, keep_history=keep_history, on_reading=on_reading).start()
    engine.track_accounting = True
    engine.listeners.append(sampler.poke)
    return sampler


def embedded_gpu_read(triton: EmbeddedTriton, reader: GpuMemoryReader) -> Callable[[], dict[str, int]]:
    """A ``GpuMemoryWatch`` read for an embedded server: the device memory NVML says the server
    and its model processes hold (one figure; the server's current pid, so a restart is followed).
    NVML's own errors are raised as ``GpuMetricsError``."""

    def read() -> dict[str, int]:
        pid = triton.pid
        if not pid:
            return {"server processes": 0}
        pids = {pid, *processes.children(pid)}
        try:
            used = reader.used_bytes_by_pid()
        except Exception as exc:  # pynvml raises its own NVMLError kinds
            raise GpuMetricsError(f"NVML: {exc}") from None
        return {"server processes": sum(b for p, b in used.items() if p in pids)}

    return read


async def attach_gpu_memory_watches(
    engine: Engine,
    spec: ServeFile,
    accounting: dict[str, str],
    say: Callable[[str], None] = lambda _: None,
    *,
    embedded: Mapping[str, EmbeddedTriton] | None = None,
    nvml: Callable[[], GpuMemoryReader] | None = None,
    interval_s: float = 1.0,
    into: list[GpuMemoryWatch] | None = None,
) -> list[GpuMemoryWatch]:
    """A started ``GpuMemoryWatch`` (its baseline read now: call before the initial placement),
    its notes in Status, for each GPU executor
    - on an external server whose spec names a ``metrics_url``: Triton's GPU metrics, up to
      Triton's refresh old; the server's entry in ``accounting`` (``TritonBackend.accounting``)
      becomes ``profile+gpu-metrics``;
    - on an ``embedded`` server: NVML's per-process figures of the server's processes (``nvml``
      makes the reader; default ``profiler.memory.NvmlReader``).
    A baseline that cannot be read (no metric, no NVML) is said (``say``, Status) and leaves that
    executor on the profile's figures. The caller stops the watches (``into``: the list each is
    appended to as it starts, so that a failure part-way leaves none unstopped)."""
    watches = into if into is not None else []
    reader: GpuMemoryReader | None = None
    for name in engine.core.executor_names():
        server_name = spec.executor_server.get(name, "")
        server = spec.servers.get(server_name)
        if server is None or engine.core.executor_kind(name) != "gpu":
            continue
        triton = (embedded or {}).get(server_name)
        if triton is not None:
            if reader is None:
                try:
                    reader = nvml() if nvml is not None else _nvml_reader()
                except CoserveError as exc:
                    why = f"executor {name}: {exc}; its GPU memory is accounted from the cost profile only"
                    say(why)
                    engine.note_sources.append(lambda why=why: [why])  # type: ignore[misc]
                    accounting[server_name] = "profile (no NVML)"
                    continue
            watch = GpuMemoryWatch(
                engine, name, server_name, embedded_gpu_read(triton, reader), interval_s=interval_s,
                staleness_s=0.5, source="NVML (per process)", whole_devices=False,
            )
        elif server.metrics_url is not None:
            watch = GpuMemoryWatch(
                engine, name, server_name, functools.partial(read_gpu_memory_used, server.metrics_url),
                interval_s=interval_s, staleness_s=TRITON_GPU_METRICS_INTERVAL_S,
            )
        else:
            continue
        watch.reserved_bytes = engine.reserved_bytes.get(name, 0)
        watches.append(watch)
        await watch.start()
        # a reading up to ``staleness_s`` old is compared with the most the core accounted
        # since then (Engine.observe_footprint's began_at), which needs the history kept
        engine.track_accounting = True
        engine.note_sources.append(watch.notes)
        if watch.baseline is None:
            say(f"executor {name}: {watch.error}; its GPU memory is accounted from the cost profile only")
        else:
            if triton is None:
                accounting[server_name] = "profile+gpu-metrics"
            at = f" at {server.metrics_url}" if triton is None else ""
            say(f"executor {name}: GPU memory measured from {watch.source}{at}")
    return watches


def _nvml_reader() -> GpuMemoryReader:
    from profiler.memory import NvmlReader  # the profiler's NVML seam (pynvml is optional)

    return NvmlReader()


async def run_service(
    spec: ServeFile,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[Service], Awaitable[None] | None] | None = None,
    on_engine: Callable[[Engine, Mapping[str, EmbeddedTriton]], None] | None = None,
    drain_timeout_s: float = 30.0,
    fast_release: bool = True,
    say: Callable[[str], None] = lambda _: None,
) -> None:
    """Serve until ``stop`` is set (module doc). ``on_ready`` runs once the engine serves;
    ``on_engine(engine, embedded)`` runs once the engine exists, before its initial placement is
    issued, with the embedded servers (by server name) idle: the hook for a memory sampler."""
    coe = load_coe(spec.coe)
    if not spec.repo.is_dir():
        raise CoserveError(f"{spec.source}: repo: {spec.repo} is not a model repository directory")
    embedded: dict[str, EmbeddedTriton] = {}
    sampler: MemorySampler | None = None
    gpu_watches: list[GpuMemoryWatch] = []
    # opened before any server starts: a log that cannot be written stops us here, with its name
    log = VerdictLog.open(spec.verdict_log, spec.repo) if spec.verdict_log is not None else None
    try:
        for name, server in spec.servers.items():
            if server.embedded:
                triton = EmbeddedTriton(spec.repo, fast_release=fast_release)
                embedded[name] = triton
                triton.start()
                say(f"embedded tritonserver {name} ready at {triton.grpc_url} ({triton.unload_mode})")
        modes = {t.unload_mode for t in embedded.values()}
        profile = load_serving_profile(spec, next(iter(modes)) if len(modes) == 1 else None)
        targets = {}
        for ex in spec.config.executors:
            server_name = spec.executor_server[ex.name]
            if server_name in embedded:
                triton = embedded[server_name]
                adapter = TritonAdapter(triton.grpc_url, process_probe=triton.process_probe())
            else:
                url = spec.servers[server_name].url
                assert url is not None
                adapter = TritonAdapter(url)
            targets[ex.name] = ExecutorTarget(server_name, adapter, ex.kind, spec.executor_gpus.get(ex.name, ()))
        backend = TritonBackend(spec.repo, targets, concurrent_loads=profile.storage_concurrent_loads)
        config = experts_config(spec, profile, set(embedded))
        # the watchdog restarts embedded servers through this seam (the engine never imports the launcher)
        control = EmbeddedServerControl(embedded, backend.reconnect)
        engine = Engine(coe, config, profile, backend, queue_bound=spec.queue_bound, source=spec.source,
                        server_control=control, version_poll_s=spec.version_poll_s)
        engine.reserved_bytes = reserved_bytes(engine, spec)
        if spec.memory_sampler:
            sampler = attach_memory_sampler(engine, embedded, spec)
            await attach_gpu_memory_watches(engine, spec, backend.accounting, say, embedded=embedded, into=gpu_watches)
        if on_engine is not None:
            on_engine(engine, embedded)
        # the log wraps the engine (records, answers retries); metrics wrap that (what clients see)
        recorded: InspectionService = engine if log is None else log.attach(engine, engine.graph, coe.name, say)
        metrics = None
        if spec.metrics_listen is not None:
            metrics = ServiceMetrics(engine, verdict_log_health=log.store.health if log is not None else None)
        api_service: InspectionService = recorded if metrics is None else metrics.wrap(recorded)
        credentials = None
        if spec.tls is not None:
            credentials = tls_credentials(spec.tls.cert_file, spec.tls.key_file, spec.tls.client_ca_file)
        frontend = InspectionServer(api_service, spec.listen, credentials=credentials)
        await frontend.start()
        try:
            if metrics is not None and spec.metrics_listen is not None:
                tls = spec.tls if spec.metrics_tls else None
                endpoint = metrics.start(
                    spec.metrics_listen, (tls.cert_file, tls.key_file, tls.client_ca_file) if tls is not None else None
                )
                say(f"metrics on {endpoint.url}")
            await engine.start(wait=True)
            service = Service(spec, coe, profile, engine, frontend, embedded, metrics, log, sampler)
            say(f"serving {coe.name} on {frontend.address} (policy {engine.policy})")
            if on_ready is not None:
                result = on_ready(service)
                if result is not None:
                    await result
            await stop.wait()
            await frontend.set_serving(False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(engine.drain(), drain_timeout_s)
        finally:
            await frontend.stop(grace=2.0)
            if metrics is not None:
                metrics.stop()
            external = [ex for ex, server in spec.executor_server.items() if server not in embedded]
            if external:  # not ours to stop: leave it as we found it
                await engine.release_all(external)
            await engine.close()
    finally:
        for watch in gpu_watches:
            await watch.stop()
        if sampler is not None:
            sampler.stop()
        if log is not None:  # after the engine: every answered verdict is in it
            await log.aclose()
        for triton in embedded.values():
            triton.stop()


async def serve_until_done(
    spec: ServeFile, work: Callable[[Service], Awaitable[T]], **options: Any
) -> T:
    """Serve ``spec`` until ``work(service)`` (run once the engine serves) returns, then stop
    gracefully (``run_service``; ``options`` go to it); ``work``'s result, or its exception after
    everything started was stopped. For the demo, the bench, benchmarks and tests: a client of
    the service for the length of one job."""
    stop = asyncio.Event()
    done: list[T] = []

    async def on_ready(service: Service) -> None:
        try:
            done.append(await work(service))
        finally:
            stop.set()

    await run_service(spec, stop, on_ready=on_ready, **options)
    if not done:
        raise CoserveError(f"{spec.source}: the service stopped before its job was done")
    return done[0]
