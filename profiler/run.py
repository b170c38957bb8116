"""``coserve profile``'s library: measure a CoE's architectures on the real Triton, write the profile.

``run_profile`` starts the embedded server on the repository (or uses one by URL), measures each
(architecture, instance kind) with ``profiler.measure``, builds the profile with
``profiler.build`` and, with ``explain``, splits one load and one unload into their parts as far
as they can be seen from outside Triton (``explain_load``).

Asking for a GPU kind on a machine without one fails before anything is started or loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from orchestrator.coe import CoEDefinition
from orchestrator.core.profile import CostProfile, profile_to_data
from orchestrator.errors import ConfigError, CoserveError
from orchestrator.triton import processes
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton
from orchestrator.triton.model_config import ModelConfig
from profiler.build import build_profile
from profiler.measure import ArchMeasurement, ArchProfiler, Plan
from profiler.memory import GpuMemoryReader, require_gpu

#: ``unload_mode`` of a profile measured against an external server (no model processes to see)
EXTERNAL_UNLOAD_MODE = "external"
TIMING_TAG = "coserve_ort timing"  # the backend's start-up marks (orchestrator/triton/backend_ort/model.py)


@dataclass(frozen=True)
class Explain:
    """One load and one unload split into parts (seconds); ``None`` where it could not be seen."""

    parts: Mapping[str, float | None]
    notes: Sequence[str]


@dataclass(frozen=True)
class ProfileResult:
    profile: CostProfile
    measurements: Sequence[ArchMeasurement]
    seconds: float
    explain: Explain | None = None


def experts_by_arch(coe: CoEDefinition, repo: Path) -> dict[str, list[str]]:
    """Exported experts of each architecture, in CoE order; an error if one is not exported."""
    found: dict[str, list[str]] = {}
    missing = []
    for name, spec in coe.experts.items():
        if (repo / name / "config.pbtxt").is_file() and (repo / name / "1" / "model.onnx").is_file():
            found.setdefault(spec.arch, []).append(name)
        else:
            missing.append(name)
    if not found:
        raise CoserveError(
            f"no expert of the CoE is exported in {repo} (missing e.g. {', '.join(missing[:3])}): "
            f"run `coserve export --coe ... --out {repo}` first"
        )
    return found


def machine_description() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = 0.0
    return f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores ({model or 'unknown CPU'}), {mem:.0f} GiB"


def host_cpu_cores() -> int:
    """The cores this process (and the servers it starts) may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run_profile(
    coe: CoEDefinition,
    repo: str | Path,
    kinds: Sequence[str] = ("cpu",),
    plan: Plan | None = None,
    *,
    triton_url: str | None = None,
    explain: bool = False,
    gpu: GpuMemoryReader | None = None,
    command: str = "coserve profile",
    tick: Callable[[str], None] = lambda _: None,
) -> ProfileResult:
    """Measure every architecture of ``coe`` exported in ``repo`` on each kind (module doc)."""
    repo = Path(repo)
    plan = plan or Plan()
    for kind in kinds:
        if kind not in ("cpu", "gpu"):
            raise ConfigError("--kind", kind, "must be cpu or gpu")
    # NVML reads the model processes of an embedded server; an external server's processes cannot
    # be seen (its GPU experts are accounted at their file size), and it may be on another box
    gpu_reader = require_gpu(gpu) if "gpu" in kinds and triton_url is None else None
    by_arch = experts_by_arch(coe, repo)
    began = time.perf_counter()
    growth: int | None = None
    if triton_url is not None:
        result = asyncio.run(_measure_all(None, triton_url, repo, by_arch, kinds, plan, False, gpu_reader, tick))
        mode, idle = EXTERNAL_UNLOAD_MODE, None
    else:
        with EmbeddedTriton(repo) as server, contextlib.ExitStack() as stack:
            idle = processes.memory(server.pid).pss_bytes if server.pid is not None else None
            # further servers only for the loads spread across servers (measure.py says why);
            # started after the idle reading, and they never hold what the main one measures
            peers = [stack.enter_context(EmbeddedTriton(repo)) for _ in range(max(plan.concurrency) - 1)]
            result = asyncio.run(
                _measure_all(
                    server, server.grpc_url, repo, by_arch, kinds, plan, explain, gpu_reader, tick,
                    peer_servers=peers,
                )
            )
            mode = server.unload_mode
            # the peers share the server's binary and libraries, which lowers its PSS while they
            # live: stopped first, so that the growth is read as the idle PSS was (without them;
            # read with them, the growth came out 0)
            stack.close()
            if idle is not None and server.pid is not None:
                growth = max(0, processes.memory(server.pid).pss_bytes - idle)
    measurements, version, explained, stuck = result
    max_batch = {m.expert: ModelConfig.read(repo / m.expert).max_batch_size for m in measurements}
    measured = {
        "machine": machine_description(),
        "triton": version,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "unload_mode": mode,
        "plan": plan.describe(),
    }
    if stuck:
        measured["stuck_unloads"] = (
            f"{stuck} unload(s) left Triton's index UNLOADING with the model's processes gone (memory back): "
            "no sample taken from them"
        )
    if measurements and not all(m.cold_cache_dropped for m in measurements):
        measured["cold_load"] = "posix_fadvise(DONTNEED) was refused: cold loads may have read cached pages"
    # the embedded server runs on this host: its cores are the ones loads and batches share
    cores = host_cpu_cores() if triton_url is None else None
    profile = build_profile(f"measured-{coe.name}", measurements, max_batch, mode, idle, measured, growth, cores)
    return ProfileResult(profile, measurements, time.perf_counter() - began, explained)


async def _measure_all(
    server: EmbeddedTriton | None,
    url: str,
    repo: Path,
    by_arch: Mapping[str, list[str]],
    kinds: Sequence[str],
    plan: Plan,
    explain: bool,
    gpu: GpuMemoryReader | None,
    tick: Callable[[str], None],
    peer_servers: Sequence[EmbeddedTriton] = (),
) -> tuple[list[ArchMeasurement], str, Explain | None, int]:
    probe = server.process_probe() if server is not None else None
    adapter = TritonAdapter(url, process_probe=probe, request_timeout_s=120.0)
    # each peer's adapter watches its model processes as serving's adapters do (that watch is CPU
    # the orchestrator spends while a load runs, on the cores the loads share)
    peers = [TritonAdapter(p.grpc_url, process_probe=p.process_probe(), request_timeout_s=120.0) for p in peer_servers]
    try:
        version = await adapter.server_version()
        results = []
        stuck = 0
        for kind in kinds:
            profiler = ArchProfiler(adapter, server, repo, plan, tick, gpu if kind == "gpu" else None, peers)
            for arch, experts in by_arch.items():
                results.append(await profiler.measure(arch, kind, experts, _companion(by_arch, experts)))
            stuck += profiler.stuck_unloads
        explained = None
        if explain and server is not None:
            first = next(iter(by_arch.values()))[0]
            explained = await explain_load(adapter, server, repo, first, kinds[0])
        return results, version, explained, stuck
    finally:
        await adapter.close()
        for peer in peers:
            await peer.close()


def _companion(by_arch: Mapping[str, Sequence[str]], experts: Sequence[str]) -> str | None:
    """The expert kept loaded beside ``experts[0]`` while its footprint is read
    (``ArchProfiler.measure``): another of its architecture, else the first of another one."""
    if len(experts) > 1:
        return experts[1]
    return next((es[0] for es in by_arch.values() if es and es[0] != experts[0]), None)


def _boot_wall_time() -> float:
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime


def _process_start_wall(pid: int) -> float | None:
    ticks = processes.start_time(pid)
    if ticks is None:
        return None
    return _boot_wall_time() + ticks / os.sysconf("SC_CLK_TCK")


def numpy_import_s() -> float | None:
    """numpy's import time in a fresh interpreter of this Python (what the stub pays before our model.py)."""
    code = "import time; t = time.perf_counter(); import numpy; print(time.perf_counter() - t)"
    times = []
    for _ in range(3):
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
            times.append(float(out.stdout.strip()))
        except (subprocess.SubprocessError, ValueError, OSError):
            return None
    return statistics.median(times)


def _timing_marks(log: str, model: str) -> dict[str, float] | None:
    for line in reversed(log.splitlines()):
        at = line.find(TIMING_TAG)
        if at < 0 or f"model={model} " not in line:
            continue
        fields = dict(part.split("=", 1) for part in line[at + len(TIMING_TAG) :].strip().strip('"').split() if "=" in part)
        try:
            return {k: float(v) for k, v in fields.items() if k not in ("model",)}
        except ValueError:
            return None
    return None


async def explain_load(
    adapter: TritonAdapter, server: EmbeddedTriton, repo: Path, name: str, kind: str
) -> Explain:
    """Split one fresh load of ``name`` and its unload into parts (see ``Explain``)."""
    config = ModelConfig.read(repo / name).with_instances(kind, 1)
    called = time.time()
    await adapter.load(name, config)
    ready = time.time()
    procs = server.model_processes(name)
    spawned = _process_start_wall(procs[0].pid) if procs else None
    marks = _timing_marks(server.log_tail(400), name) or {}
    inputs = {config.inputs[0].name: _zeros(config)}
    t0 = time.perf_counter()
    await adapter.infer(name, inputs)
    first = time.perf_counter() - t0
    steady = []
    for _ in range(10):
        t0 = time.perf_counter()
        await adapter.infer(name, inputs)
        steady.append(time.perf_counter() - t0)
    unloaded = await adapter.unload(name)
    numpy_s = numpy_import_s() if marks.get("numpy_before") == 1.0 else None
    module = marks.get("module")

    def gap(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else max(0.0, b - a)

    parts: dict[str, float | None] = {
        "load call (total)": ready - called,
        "Triton until the model process is spawned": gap(called, spawned),
        "stub and interpreter start": gap(spawned, module),
        "numpy and Triton's Python utilities import": gap(module, marks.get("numpy")),
        "onnxruntime import": gap(marks.get("numpy"), marks.get("ort")),
        "initialize until the session starts": gap(marks.get("ort"), marks.get("session_start")),
        "ORT session creation": gap(marks.get("session_start"), marks.get("session_done")),
        "after the session until READY": gap(marks.get("session_done"), ready),
        "first inference (extra over steady)": max(0.0, first - statistics.median(steady)),
        "unload call": unloaded.call_seconds,
        "unload: call returned until memory back": unloaded.gone_seconds - unloaded.call_seconds,
    }
    notes = ["process start time comes from /proc (clock ticks: 10 ms resolution)"]
    if marks.get("numpy_before") == 1.0:  # the stub imported numpy before the model's module ran
        parts["stub and interpreter start"] = None
        parts["numpy import (fresh interpreter)"] = numpy_s
        notes.append(
            "numpy was imported before the model's code ran, so it is timed in fresh interpreters of "
            "this Python (median of 3) and the stub start is not split from it"
        )
    if not marks:
        notes.append("the backend's timing line was not found in the server log: backend parts unknown")
    return Explain(parts, notes)


def _zeros(config: ModelConfig) -> np.ndarray:
    return np.zeros((1, *config.inputs[0].dims), dtype=np.float32)


def write_profile(result: ProfileResult, path: str | Path) -> Path:
    """Write the profile YAML with a header comment naming machine, Triton, date, command, time."""
    path = Path(path)
    m = result.profile.measured
    header = [
        "Cost profile measured by `coserve profile` through a real Triton (figures: medians; see",
        "docs/profiler.md for each rule).",
        f"machine: {m.get('machine', '?')}",
        f"triton: {m.get('triton', '?')}  unload mode: {m.get('unload_mode', '?')}",
        f"date: {m.get('date', '?')}  took {result.seconds:.0f} s",
        f"command: {m.get('command', '?')}",
    ]
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(
        profile_to_data(result.profile), sort_keys=False, default_flow_style=False
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise CoserveError(f"cannot write the profile to {path}: {exc.strerror or exc}") from None
    return path


def check_cache_current(profile: CostProfile, mode: str, source: str) -> None:
    """Refuse a *cached* profile (the demo's, the bench's) this version would measure differently:
    another unload mode (``check_unload_mode``), or host memory measured before the shared pages
    of the model processes were split from what each expert adds (no ``shared_bytes``: each
    ``weight_bytes`` is a whole footprint alone, safe but about 1.5x what an expert adds beside
    others). A profile given explicitly is used as it is."""
    check_unload_mode(profile, mode, source)
    cpu = profile.processors.get("cpu")
    if mode != EXTERNAL_UNLOAD_MODE and cpu is not None and cpu.server_idle_bytes is not None and cpu.shared_bytes is None:
        raise ConfigError(
            source, "processors.cpu.shared_bytes",
            "is missing: measured before the shared pages were split from what each expert adds; re-run `coserve profile`",
        )


def check_unload_mode(profile: CostProfile, mode: str, source: str) -> None:
    """Refuse a cached profile measured with another unload mode (its ``unload_time_s`` is wrong here)."""
    measured = profile.measured.get("unload_mode")
    if measured is not None and measured != mode:
        raise ConfigError(
            source,
            "measured.unload_mode",
            f"was measured with unload mode {measured!r} but this server runs {mode!r}: re-run `coserve profile`",
        )
