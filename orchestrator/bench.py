"""``coserve bench``'s library: every policy on the real embedded Triton, beside the simulator.

For each policy (default: the registered paper policies, ``core.policies.PAPER_POLICIES``), and
once more for the **all-resident** case, ``run_bench``:

1. starts the service in-process (``orchestrator.serve.run_service``: one embedded tritonserver
   per executor of the serve config, the engine, the factory gRPC API on a fresh port) with the
   serve config's policy replaced;
2. starts the service's ``MemorySampler`` on the policy's executors' servers while they are
   still idle (``orchestrator.serve.attach_memory_sampler`` from ``run_service``'s ``on_engine``
   hook, keeping its history), poked at every confirmed load, unload and restart; its readings
   correct the engine's accounting as in serving;
3. once the service is SERVING, streams an untimed **warm-up** of ``warmup`` requests (default
   200) and then the **measured** task of ``requests`` requests through ``InspectBoard`` with the
   typed client (``orchestrator.client``), one request every ``interval_s`` on an absolute
   schedule, each stream with its own board id (``bench-<run>-warmup``, ``bench-<run>``);
4. stops the service.

Workload (the same for every run): the measured task is ``requests`` component images from the
deterministic board source (``orchestrator.board_source``, seed ``seed + 1``), continuing onto
further boards; by default in ``shuffled`` order -- each board's components in a seeded random
order, i.e. types drawn from the board mix without scan-order locality, the request model of
``coserve simulate --coe`` and of the paper-calibrated tasks (``simulate.workload``); ``order=
"board"`` is the board's scan order instead (clusters of one type back to back, which hands every
policy batches for free). The warm-up is ``warmup`` images of the same mix from another seed
(``seed + 2``), shuffled. ``cold_start`` skips the warm-up. Images go as raw float32 tensors.

Figures of a real run (``RunOutcome``):

- ``throughput_img_s``: completed components (verdict not ``error``) / the wall time from the
  first request sent to the last verdict received (client side);
- ``switches``: the simulator's definition (``simulate.engine.SimResult.switches``): loads from
  storage (``Load`` decisions of tier ``disk``) the core issued during the measured task, i.e. from
  just before its first request is sent until its last verdict; with ``cold_start`` counting starts
  at the initial placement, as the simulator's cold start counts it. On Triton every load reads the
  repository; on a CPU-only box every load is of tier ``disk``;
- ``p50_latency_s`` / ``p99_latency_s``: nearest-rank percentiles (the simulator's) of each
  component's time from being sent to its verdict arriving;
- ``peak_memory_bytes``: the sampler's highest total footprint (model processes' PSS plus each
  server's PSS growth over idle, summed over the run's executors) during the measured task;
  ``executor_peak_bytes`` keeps each executor's peak over the whole service life (placement and
  warm-up too), which is what ``executor_budget_bytes`` is checked against;
- ``predicted_*``: the simulator (``simulate.engine.Simulation``) on the same cost profile, the
  config the engine ran (``Engine.config``: the serve config's, less what ``run_service`` takes off
  each embedded executor's budget for the server's own growth) and policy, and the same request
  sequence: the measured task's component types in the
  order sent at the nominal arrival times, the detector step exactly where the real run ran it,
  after the same warm-up sequence (its own detector steps likewise).

The **all-resident** run is the ``coserve`` policy on the same executors with each budget big
enough for every expert (``all_resident_config``). **compulsory** is not run: it is the simulator's
bound (``simulate.bounds.compute_bounds``, the same definition ``coserve simulate`` reports) on the
measured task and the config the engine ran; its ``peak_memory_bytes`` is ``None`` (nothing is measured)
and its predicted throughput is the bound itself.

Profile (``ensure_profile``): ``--profile`` if given; else the serve config's ``profile`` or
``<repo>/profile.yaml`` when it exists and is current (this server's unload mode, the shared pages
measured: ``profiler.run.check_cache_current``) and, where the caller asks for a plan, was measured
with it; else it is measured (``profiler.run.run_profile`` with that plan, by default
``Plan.quick()``) and written there. ``coserve bench`` asks for the full plan (``--quick-profile``
for the quick one), as do ``benchmarks/serve_bench.py`` and ``plan_grid.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import aio
from orchestrator.board_source import BoardRequest, BoardSource, Order
from orchestrator.coe import CoEDefinition, load_coe
from orchestrator.config_reader import read_yaml_file
from orchestrator.core.coe_graph import coe_nodes_and_routes, graph_from_coe
from orchestrator.core.layout import executors_for
from orchestrator.core.policies import PAPER_POLICIES, get_policy
from orchestrator.core.profile import CostProfile, parse_profile
from orchestrator.core.scheduler import Request
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.engine.memory_sampler import Footprint, MemorySampler, SamplerReport
from orchestrator.errors import ConfigError, CoserveError
from orchestrator.serve_file import ServeFile, ServerSpec
from orchestrator.simulate.bounds import compute_bounds
from orchestrator.simulate.engine import SimResult, Simulation, percentile
from orchestrator.simulate.workload import Workload

if TYPE_CHECKING:
    from profiler.measure import Plan

#: the JSON's keys, in order, for every entry (policies, ``all-resident``, ``compulsory``)
FIELDS = (
    "throughput_img_s",
    "switches",
    "p50_latency_s",
    "p99_latency_s",
    "peak_memory_bytes",
    "predicted_throughput_img_s",
)
ALL_RESIDENT = "all-resident"
COMPULSORY = "compulsory"
DEFAULT_INTERVAL_MS = 4.0
DEFAULT_REQUESTS = 600
WARMUP_REQUESTS = 200
BUDGET_EXECUTORS = 2  # --budget-bytes: two CPU executors (one per core of this box)

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# -- configs ------------------------------------------------------------------------------------
def split_budget(total_bytes: int, n: int = BUDGET_EXECUTORS) -> list[int]:
    """``total_bytes`` split into ``n`` integer budgets that sum to it (the first get the remainder)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    if total_bytes < n:
        raise ConfigError("--budget-bytes", str(total_bytes), f"must be at least {n} (one byte per executor)")
    base, extra = divmod(int(total_bytes), n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def budget_serve_file(
    coe_path: str | Path,
    repo: str | Path,
    budget_bytes: int,
    *,
    executors: int = BUDGET_EXECUTORS,
    profile: str | Path | None = None,
    policy: str = "coserve",
) -> ServeFile:
    """The serve config ``--budget-bytes`` stands for: ``executors`` CPU executors ``cpu0..``
    splitting ``budget_bytes`` (``split_budget``), each on its own embedded server. Policies derive
    their layouts from it (``core.layout``): ``samba-lru`` one executor ``cpu0`` with all of it,
    ``samba-parallel`` and CoServe all of them."""
    budgets = split_budget(budget_bytes, executors)
    execs = tuple(ExecutorConfig(f"cpu{i}", "cpu", b) for i, b in enumerate(budgets))
    servers = {f"embedded_{e.name}": ServerSpec(f"embedded_{e.name}") for e in execs}
    return ServeFile(
        source="--budget-bytes",
        config=ServeConfig(executors=execs, policy=policy),
        coe=Path(coe_path),
        repo=Path(repo),
        profile=Path(profile) if profile is not None else None,
        listen="127.0.0.1:0",
        queue_bound=10_000,
        servers=servers,
        executor_server={e.name: f"embedded_{e.name}" for e in execs},
        executor_gpus={e.name: () for e in execs},
    )


def all_resident_config(config: ServeConfig, coe: CoEDefinition, profile: CostProfile) -> ServeConfig:
    """The same executors, ``coserve``, each budget big enough for every expert it can run (their
    bytes, plus the largest expert and one max batch of activations as headroom, plus what the
    service takes off an embedded executor's budget first: ``executor_reserve_bytes``)."""
    graph = graph_from_coe(coe, profile, "all-resident")
    execs = []
    for ex in config.executors:
        sizes = [graph.bytes(e, ex.kind) or 0 for e in graph.experts]
        batch = 0
        for per in profile.architectures.values():
            c = per.get(ex.kind)
            if c is not None:
                batch = max(batch, c.activation_bytes_per_item * c.max_batch)
        reserve = batch + profile.processor(ex.kind).executor_reserve_bytes()
        execs.append(replace(ex, budget_bytes=max(ex.budget_bytes, sum(sizes) + max(sizes, default=0) + reserve)))
    return replace(config, executors=tuple(execs), policy="coserve")


def expert_footprint_bytes(coe: CoEDefinition, profile: CostProfile, kind: str = "cpu") -> int:
    """The experts' profiled footprint on ``kind``: the sum of their bytes (``weight_bytes``, what
    each adds) plus, once, the pages their model processes share (``shared_bytes``): what they
    would hold loaded together on one server."""
    graph = graph_from_coe(coe, profile, "footprint")
    return sum(graph.bytes(e, kind) or 0 for e in graph.experts) + (profile.processor(kind).shared_bytes or 0)


def check_layouts(spec: ServeFile, policies: Sequence[str]) -> None:
    """Every executor a policy's layout names must be an executor of the serve config (that is
    where its server comes from); a ``ConfigError`` naming the policy otherwise."""
    names = set(spec.executor_server)
    for p in policies:
        execs, _ = executors_for(get_policy(p), replace(spec.config, policy=p))
        missing = [e.name for e in execs if e.name not in names]
        if missing:
            raise ConfigError(
                spec.source, "executors",
                f"policy {p} runs on executor(s) {', '.join(missing)}, which the serve config does not "
                f"list (it has {', '.join(sorted(names))}); name the executors cpu0, cpu1, ...",
            )


# -- profile ------------------------------------------------------------------------------------
def server_unload_mode(fast_release: bool = True) -> str:
    """The unload mode an embedded server started now would run in (without starting one)."""
    from orchestrator.triton.launcher import UNLOAD_MODE_FAST, UNLOAD_MODE_STOCK, build_fast_release

    if not fast_release:
        return UNLOAD_MODE_STOCK
    shim, _ = build_fast_release()
    return UNLOAD_MODE_FAST if shim is not None else UNLOAD_MODE_STOCK


def ensure_profile(
    spec: ServeFile,
    coe: CoEDefinition,
    profile: str | Path | None = None,
    *,
    plan: Plan | None = None,
    say: Say = _quiet,
) -> tuple[Path, CostProfile]:
    """The cost profile to bench with (module doc): ``profile`` (must exist), else the cached one
    beside the repository if it is current (and, with ``plan``, was measured with that plan; a
    profile the serve config names is not held to the plan), else one measured now with ``plan``
    (default: the quick plan).

    The acceptance benchmarks ask for the full plan: a quick profile's two loads per figure can
    fall in one of this box's slow spells (docs/profiler.md "Run to run"); one such profile, 30%
    slow on its idle load time, put the simulator 26% below two real runs."""
    from profiler.measure import Plan
    from profiler.run import check_cache_current

    if profile is not None:
        path = Path(profile)
        if not path.is_file():
            raise ConfigError("--profile", str(path), "no such file")
        return path, parse_profile(read_yaml_file(path), str(path))
    path = spec.profile or spec.repo / "profile.yaml"
    mode = server_unload_mode()
    if path.is_file():
        cached = parse_profile(read_yaml_file(path), str(path))
        try:
            check_cache_current(cached, mode, str(path))
            # a profile the serve config names is the operator's: used as it is, never re-measured
            if plan is not None and spec.profile is None and cached.measured.get("plan") != plan.describe():
                raise ConfigError(str(path), "measured.plan", f"is not the plan asked for ({plan.describe()})")
        except ConfigError as exc:
            say(f"cached profile not reused: {exc}")
        else:
            say(f"cost profile: {path} (cached, unload mode {mode})")
            return path, cached
    from profiler.run import run_profile, write_profile

    quick = plan is None or plan == Plan.quick()
    name = "quick" if quick else "full" if plan == Plan() else "custom"
    say(f"measuring a {name} cost profile of {coe.name} on {spec.repo} ...")
    result = run_profile(coe, spec.repo, ("cpu",), plan or Plan.quick(), command=f"coserve bench ({name} profile)")
    write_profile(result, path)
    say(f"cost profile: {path} (measured in {result.seconds:.0f} s)")
    return path, result.profile


# -- workload -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchWorkload:
    """The request sequences every run streams (module doc)."""

    warmup: tuple[BoardRequest, ...]
    measured: tuple[BoardRequest, ...]
    interval_s: float


def bench_workload(
    coe: CoEDefinition, requests: int, interval_s: float, warmup: int, *, seed: int = 0, order: Order = "shuffled"
) -> BenchWorkload:
    """The warm-up and measured sequences (module doc), the same for every run."""
    if requests < 1:
        raise ConfigError("--requests", str(requests), "must be >= 1")
    if not 0.0 <= interval_s < math.inf:
        raise ConfigError("--interval-ms", str(interval_s * 1000), "must be a finite number >= 0")
    measured = tuple(BoardSource(coe, seed=seed + 1).requests(requests, order=order, encoding="array"))
    warm = tuple(BoardSource(coe, seed=seed + 2).requests(warmup, order="shuffled", encoding="array")) if warmup else ()
    return BenchWorkload(warm, measured, interval_s)


def sim_workload(
    coe: CoEDefinition,
    profile: CostProfile,
    requests: Sequence[BoardRequest],
    detector_ran: Sequence[bool],
    interval_s: float,
    name: str,
) -> Workload:
    """The simulator's workload for a request sequence as it ran: the same graph as the engine's
    (``core.coe_graph``), request ``i`` at ``i * interval_s`` for its type's experts, and the
    detector step exactly where ``detector_ran`` says."""
    nodes, routes = coe_nodes_and_routes(coe, profile, name)
    reqs: list[Request] = []
    verdicts: dict[int, bool] = {}
    for i, (r, ran) in enumerate(zip(requests, detector_ran, strict=True)):
        rule = coe.routing[r.component_type]
        reqs.append(Request(i, round(i * interval_s, 9), rule.classifier, rule.detector))
        verdicts[i] = bool(ran and rule.detector is not None)
    probs = coe.type_probabilities()
    wl = Workload(name, "A", nodes, routes, reqs, verdicts, [r.component_type for r in requests])
    names = tuple(sorted(t for t in routes if probs.get(t, 0.0) > 0))
    wl.type_mix = (names, tuple(probs[t] for t in names))
    wl.interval_s = interval_s
    wl.phases = [(0, wl.expert_probs(probs))]
    return wl


def predict(
    measured: Workload, warmup: Workload | None, config: ServeConfig, profile: CostProfile, policy: str
) -> SimResult:
    """The simulator on ``measured`` after exactly the ``warmup`` task (None: cold start)."""
    sim = Simulation(measured, config, profile, policy, warmup_tasks=0)
    if warmup is not None and warmup.requests:
        # the real warm-up sequence instead of redrawn ones (Simulation runs ``warmups`` first)
        sim.warmups = [warmup]
    return sim.run()


# -- one real run -------------------------------------------------------------------------------
@dataclass
class StreamResult:
    """One board streamed: per component id, when it was sent and its verdict."""

    sent_at: dict[str, float] = field(default_factory=dict)
    answered_at: dict[str, float] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    detector_ran: dict[str, bool] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def first_sent(self) -> float:
        return min(self.sent_at.values(), default=0.0)

    @property
    def last_answer(self) -> float:
        return max(self.answered_at.values(), default=self.first_sent)

    def latencies(self) -> list[float]:
        return [self.answered_at[c] - self.sent_at[c] for c in self.answered_at if c in self.sent_at]


@dataclass(frozen=True)
class BoxDuringRun:
    """What else the box did while a run ran: its 1-minute load average at the start and the end,
    and the share of all CPU time the hypervisor gave to someone else (``steal`` in /proc/stat;
    ``None`` where the kernel does not report it). On a shared VM a run that finds the box slower
    than its profile did shows here, not only in a prediction that misses."""

    load_avg_1m: tuple[float, float]
    steal_share: float | None


def _cpu_jiffies() -> tuple[int, int] | None:
    """(steal, total) jiffies over all CPUs from /proc/stat; ``None`` where it cannot be read."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return values[7], sum(values)


def box_during(start: tuple[float, tuple[int, int] | None]) -> BoxDuringRun:
    """``BoxDuringRun`` since ``start`` (``box_mark()``'s value)."""
    load0, cpu0 = start
    cpu1 = _cpu_jiffies()
    steal = None
    if cpu0 is not None and cpu1 is not None and cpu1[1] > cpu0[1]:
        steal = (cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1])
    return BoxDuringRun((round(load0, 2), round(os.getloadavg()[0], 2)), None if steal is None else round(steal, 4))


def box_mark() -> tuple[float, tuple[int, int] | None]:
    """The box's state now (load average, CPU jiffies), for ``box_during`` after the run."""
    return os.getloadavg()[0], _cpu_jiffies()


@dataclass
class RunOutcome:
    """One real run (module doc for each figure)."""

    name: str
    policy: str
    completed: int
    errors: int
    makespan_s: float
    throughput_img_s: float
    switches: int
    p50_latency_s: float
    p99_latency_s: float
    peak_memory_bytes: int | None
    executor_peak_bytes: dict[str, int]
    executor_budget_bytes: dict[str, int]
    outcomes: dict[str, str]
    warmup_outcomes: dict[str, str]
    detector_ran: list[bool]
    warmup_detector_ran: list[bool]
    sampler: SamplerReport | None
    loads_total: int
    unloads_total: int
    load_s: float
    compute_s: float
    predicted: SimResult | None = None
    error_texts: dict[str, int] = field(default_factory=dict)  # error verdict text -> how many
    #: the config the engine ran (``run_service`` may give the experts less than the serve
    #: config's budgets: what the server itself grows by is taken off); the simulator gets it
    engine_config: ServeConfig | None = None
    memory_history: list[Footprint] = field(default_factory=list, repr=False)
    box: BoxDuringRun | None = None  # set by ``run_bench`` around the run (warm-up included)

    def row(self) -> dict[str, float | int | None]:
        pred = self.predicted.throughput_img_s if self.predicted is not None else None
        return {
            "throughput_img_s": round(self.throughput_img_s, 4),
            "switches": self.switches,
            "p50_latency_s": round(self.p50_latency_s, 4),
            "p99_latency_s": round(self.p99_latency_s, 4),
            "peak_memory_bytes": self.peak_memory_bytes,
            "predicted_throughput_img_s": round(pred, 4) if pred is not None else None,
        }

    def over_budget(self) -> dict[str, tuple[int, int]]:
        """Executors whose measured peak exceeded their budget: name -> (peak, budget)."""
        return {
            ex: (peak, self.executor_budget_bytes[ex])
            for ex, peak in self.executor_peak_bytes.items()
            if ex in self.executor_budget_bytes and peak > self.executor_budget_bytes[ex]
        }


async def _stream(
    client: object, board_id: str, requests: Sequence[BoardRequest], interval_s: float
) -> StreamResult:
    from orchestrator.client import InspectionClient
    from orchestrator.engine.types import InspectRequest
    from orchestrator.frontend.board import BoardSummary

    assert isinstance(client, InspectionClient)
    out = StreamResult()
    loop = asyncio.get_running_loop()

    async def produce():  # type: ignore[no-untyped-def]
        t0 = loop.time()
        for i, r in enumerate(requests):
            delay = t0 + i * interval_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            cid = str(r.request_id)
            out.sent_at[cid] = time.perf_counter()
            yield InspectRequest(board_id, cid, r.component_type, r.image)

    async for item in client.inspect_board(produce()):
        if isinstance(item, BoardSummary):
            continue
        now = time.perf_counter()
        out.answered_at[item.component_id] = now
        out.outcomes[item.component_id] = item.outcome
        out.detector_ran[item.component_id] = len(item.experts) >= 2
        if item.outcome == "error":
            out.errors[item.component_id] = item.error or "error"
    return out


@dataclass
class _Captured:
    """What ``run_one`` reads from inside the service while it runs."""

    warm: StreamResult = field(default_factory=StreamResult)
    measured: StreamResult | None = None
    window: SamplerReport | None = None
    switches: int = 0
    loads: int = 0
    unloads: int = 0
    load_s: float = 0.0
    compute_s: float = 0.0
    engine_config: ServeConfig | None = None


async def run_one(
    spec: ServeFile,
    name: str,
    workload: BenchWorkload,
    *,
    cold_start: bool = False,
    say: Say = _quiet,
    serving_timeout_s: float = 600.0,
    keep_history: bool = False,
) -> RunOutcome:
    """Serve ``spec`` (its policy as configured) and stream the warm-up, then the measured task;
    ``keep_history`` keeps every memory sample (``RunOutcome.memory_history``).

    Each run streams boards of its own (``bench-<run token>-<name>``): a serve config's verdict
    log answers a repeated (board, component) id from its record without inspecting, so ids
    reused across runs (or across bench invocations on one log) would measure the log, not the
    service."""
    from orchestrator.client import InspectionClient

    board = f"bench-{secrets.token_hex(4)}-{name}"
    from orchestrator.engine.engine import Engine
    from orchestrator.serve import Service, attach_memory_sampler, serve_until_done
    from orchestrator.triton.launcher import EmbeddedTriton, free_port

    # the sampler is attached here (on_engine) rather than by run_service, to keep its history
    spec = replace(spec, listen=f"127.0.0.1:{free_port()}", memory_sampler=False)
    policy = spec.config.policy
    layout, _ = executors_for(get_policy(policy), spec.config)
    budgets = {e.name: e.budget_bytes for e in layout}
    samplers: list[MemorySampler] = []
    got = _Captured()

    def on_engine(engine: Engine, embedded: Mapping[str, EmbeddedTriton]) -> None:
        got.engine_config = engine.config
        # the service's own sampler (it corrects the accounting as in serving), with history
        sampler = attach_memory_sampler(engine, embedded, spec, keep_history=keep_history)
        if sampler is not None:
            samplers.append(sampler)

    async def on_ready(service: Service) -> None:
        engine = service.engine
        async with InspectionClient(service.address) as client:
            await client.wait_until_serving(serving_timeout_s)
            if workload.warmup and not cold_start:
                t = time.perf_counter()
                got.warm = await _stream(client, f"{board}-warmup", workload.warmup, workload.interval_s)
                say(f"  {name}: warm-up of {len(workload.warmup)} in {time.perf_counter() - t:.1f} s")
            before = replace(engine.stats)
            if cold_start:
                before.switches = 0  # the placement's loads count too
            for s in samplers:
                s.reset_window()
            got.measured = await _stream(client, board, workload.measured, workload.interval_s)
            got.window = samplers[0].report() if samplers else None
            st = engine.stats
            got.switches = st.switches - before.switches
            got.loads, got.unloads = st.loads - before.loads, st.unloads - before.unloads
            got.load_s, got.compute_s = st.load_s - before.load_s, st.compute_s - before.compute_s

    try:
        await serve_until_done(spec, on_ready, on_engine=on_engine)
    finally:
        final = [s.stop() for s in samplers]
    measured, warm = got.measured, got.warm
    if measured is None:
        raise CoserveError(f"bench run {name}: the service stopped before the task was streamed")
    completed = sum(1 for o in measured.outcomes.values() if o != "error")
    makespan = max(measured.last_answer - measured.first_sent, 1e-12)
    lat = measured.latencies()
    ids = [str(r.request_id) for r in workload.measured]
    warm_ids = [str(r.request_id) for r in workload.warmup] if warm.outcomes else []
    report = final[0] if final else None
    return RunOutcome(
        name=name,
        policy=policy,
        completed=completed,
        errors=len(measured.errors),
        makespan_s=makespan,
        throughput_img_s=completed / makespan if completed else 0.0,
        switches=got.switches,
        p50_latency_s=percentile(lat, 50),
        p99_latency_s=percentile(lat, 99),
        peak_memory_bytes=got.window.window_peak_total_bytes if got.window is not None else None,
        executor_peak_bytes=dict(report.lifetime_peak_bytes) if report is not None else {},
        executor_budget_bytes=budgets,
        outcomes=dict(measured.outcomes),
        warmup_outcomes=dict(warm.outcomes),
        detector_ran=[measured.detector_ran.get(c, False) for c in ids],
        warmup_detector_ran=[warm.detector_ran.get(c, False) for c in warm_ids],
        sampler=report,
        loads_total=got.loads,
        unloads_total=got.unloads,
        load_s=got.load_s,
        compute_s=got.compute_s,
        memory_history=list(samplers[0].history) if samplers else [],
        error_texts=dict(Counter(measured.errors.values()).most_common(10)),
        engine_config=got.engine_config,
    )


# -- the whole bench ----------------------------------------------------------------------------
@dataclass
class BenchResult:
    """Every run, the compulsory bound, and what they were run on."""

    runs: dict[str, RunOutcome]
    compulsory: SimResult
    profile_path: Path
    config: ServeConfig
    resident_config: ServeConfig | None
    requests: int
    warmup: int
    interval_s: float

    def to_json_obj(self) -> dict[str, dict[str, float | int | None]]:
        """One flat object: run name (policies, ``all-resident``) and ``compulsory`` -> ``FIELDS``."""
        out = {name: run.row() for name, run in self.runs.items()}
        c = self.compulsory
        out[COMPULSORY] = {
            "throughput_img_s": round(c.throughput_img_s, 4),
            "switches": c.switches,
            "p50_latency_s": round(c.p50_latency_s, 4),
            "p99_latency_s": round(c.p99_latency_s, 4),
            "peak_memory_bytes": None,
            "predicted_throughput_img_s": round(c.throughput_img_s, 4),
        }
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_json_obj(), indent=2) + "\n"

    def sampler_cpu_share(self) -> float:
        """The highest CPU share of one core any run's memory sampler used."""
        return max((r.sampler.cpu_share for r in self.runs.values() if r.sampler is not None), default=0.0)


def run_bench(
    spec: ServeFile,
    *,
    policies: Sequence[str] | None = None,
    profile: str | Path | None = None,
    profile_plan: Plan | None = None,
    requests: int = DEFAULT_REQUESTS,
    interval_s: float = DEFAULT_INTERVAL_MS / 1000.0,
    warmup: int = WARMUP_REQUESTS,
    cold_start: bool = False,
    all_resident: bool = True,
    seed: int = 0,
    order: Order = "shuffled",
    say: Say = _quiet,
) -> BenchResult:
    """Run every policy (and the all-resident case) for real and beside the simulator (module doc).

    Raises ``ConfigError`` for an unknown policy, a layout the serve config cannot host, or bad
    numbers; ``CoserveError`` when the service could not serve a run."""
    names = list(policies or PAPER_POLICIES)
    for p in names:
        get_policy(p)
    check_layouts(spec, names)
    coe = load_coe(spec.coe)
    if not spec.repo.is_dir():
        raise ConfigError(spec.source, "repo", f"{spec.repo} is not a model repository directory")
    path, prof = ensure_profile(spec, coe, profile, plan=profile_plan, say=say)
    spec = replace(spec, profile=path.resolve())
    wl = bench_workload(coe, requests, interval_s, 0 if cold_start else warmup, seed=seed, order=order)
    runs: dict[str, RunOutcome] = {}
    plan: list[tuple[str, ServeFile]] = [(p, replace(spec, config=replace(spec.config, policy=p))) for p in names]
    resident = all_resident_config(spec.config, coe, prof) if all_resident else None
    if resident is not None:
        plan.append((ALL_RESIDENT, replace(spec, config=resident)))
    for name, run_spec in plan:
        say(f"run {name} (policy {run_spec.config.policy}): {len(wl.warmup)} warm-up + {len(wl.measured)} requests "
            f"every {interval_s * 1000:g} ms")
        t = time.perf_counter()
        mark = box_mark()
        run = aio.run(run_one(run_spec, name, wl, cold_start=cold_start, say=say))
        run.box = box_during(mark)
        measured = sim_workload(coe, prof, wl.measured, run.detector_ran, interval_s, f"bench-{name}")
        warm = (
            sim_workload(coe, prof, wl.warmup, run.warmup_detector_ran, interval_s, f"bench-{name}-warmup")
            if wl.warmup and not cold_start else None
        )
        run.predicted = predict(measured, warm, run.engine_config or run_spec.config, prof, run_spec.config.policy)
        runs[name] = run
        say(f"  {name}: {run.throughput_img_s:.1f} img/s (predicted {run.predicted.throughput_img_s:.1f}), "
            f"{run.switches} switches (predicted {run.predicted.switches}), {run.errors} errors, "
            f"took {time.perf_counter() - t:.0f} s; box: load {run.box.load_avg_1m[0]:.1f}-{run.box.load_avg_1m[1]:.1f}"
            + ("" if run.box.steal_share is None else f", {run.box.steal_share:.1%} of the CPU stolen by the host"))
        for text, n in run.error_texts.items():
            say(f"    {n} x {text}")
    ref = next(iter(runs.values()))
    task = sim_workload(coe, prof, wl.measured, ref.detector_ran, interval_s, "bench")
    config = ref.engine_config or spec.config
    bound = compute_bounds(task, config, prof, start_empty=cold_start).row(COMPULSORY, len(task.requests))
    return BenchResult(runs, bound, path, spec.config, resident, len(wl.measured), len(wl.warmup), interval_s)


# -- output -------------------------------------------------------------------------------------
def format_table(result: BenchResult) -> str:
    """The table ``coserve bench`` prints: real beside predicted, memory against budgets."""
    head = (f"{'run':<15} {'img/s':>8} {'pred':>8} {'diff':>6} {'switches':>8} {'pred':>5} "
            f"{'p50 s':>7} {'p99 s':>7} {'peak MiB':>9}  executors: peak / budget MiB")
    lines = [
        f"{result.requests} requests every {result.interval_s * 1000:g} ms after a warm-up of {result.warmup}; "
        f"profile {result.profile_path}",
        head,
        "-" * len(head),
    ]
    mib = 2**20
    for name, r in result.runs.items():
        pred = r.predicted
        p_tp = pred.throughput_img_s if pred is not None else float("nan")
        diff = (p_tp - r.throughput_img_s) / r.throughput_img_s if r.throughput_img_s else float("nan")
        execs = " ".join(
            f"{ex}:{r.executor_peak_bytes.get(ex, 0) / mib:.0f}/{b / mib:.0f}" for ex, b in sorted(r.executor_budget_bytes.items())
        )
        peak = f"{r.peak_memory_bytes / mib:9.0f}" if r.peak_memory_bytes is not None else f"{'-':>9}"
        lines.append(
            f"{name:<15} {r.throughput_img_s:8.2f} {p_tp:8.2f} {diff:+6.0%} {r.switches:8d} "
            f"{pred.switches if pred is not None else 0:5d} {r.p50_latency_s:7.2f} {r.p99_latency_s:7.2f} {peak}  {execs}"
            + (f"  ERRORS={r.errors}" if r.errors else "")
        )
    c = result.compulsory
    lines.append(f"{COMPULSORY:<15} {c.throughput_img_s:8.2f} {'':>8} {'':>6} {c.switches:8d} {'':>5} "
                 f"{c.p50_latency_s:7.2f} {c.p99_latency_s:7.2f} {'-':>9}  (bound from the profile)")
    return "\n".join(lines)


def write_json(result: BenchResult, path: str | Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(result.to_json())
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot write JSON ({exc.strerror or exc})") from None
    return path


def plot(result: BenchResult, path: str | Path, title: str = "coserve bench") -> Path:
    """Throughput (real and predicted) and switches per run as a PNG (matplotlib, Agg)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CoserveError("--plot needs matplotlib (a coserve dependency): pip install matplotlib") from None
    obj = result.to_json_obj()
    names = list(result.runs)
    real = [float(obj[n]["throughput_img_s"] or 0.0) for n in names]
    pred = [float(obj[n]["predicted_throughput_img_s"] or 0.0) for n in names]
    sw_real = [int(obj[n]["switches"] or 0) for n in names]
    sw_pred = [r.predicted.switches if r.predicted is not None else 0 for r in result.runs.values()]
    xs = range(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(9.0, 1.5 * len(names) + 3), 4.5))
    w = 0.38
    ax1.bar([x - w / 2 for x in xs], real, w, label="real (Triton)")
    ax1.bar([x + w / 2 for x in xs], pred, w, label="predicted (simulator)")
    ax1.axhline(result.compulsory.throughput_img_s, color="k", ls="--", lw=1, label="compulsory bound")
    ax1.set_yscale("log")  # all-resident is an order of magnitude above the rest
    ax1.set_ylabel("throughput (images/s, log scale)")
    ax1.set_xticks(list(xs), names, rotation=30, ha="right")
    ax1.legend(fontsize=8)
    ax2.bar([x - w / 2 for x in xs], sw_real, w, label="real")
    ax2.bar([x + w / 2 for x in xs], sw_pred, w, label="predicted")
    ax2.set_ylabel("switches (loads from storage)")
    ax2.set_ylim(bottom=0, top=max([*sw_real, *sw_pred, 1]) * 1.1)
    ax2.set_xticks(list(xs), names, rotation=30, ha="right")
    ax2.legend(fontsize=8)
    fig.suptitle(f"{title}: {result.requests} requests every {result.interval_s * 1000:g} ms")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
