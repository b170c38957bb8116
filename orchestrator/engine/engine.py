"""The engine: the second driver of the pure core, against a real (or fake) backend.

It feeds requests to ``CoreScheduler`` and executes the decisions it returns (the driver protocol
in ``orchestrator.core``) on a ``Backend``:

- ``Load`` -> ``backend.load`` in a task; ``on_load_done`` when it returns (``ok=False`` if it
  failed). ``Unload`` -> ``backend.unload`` (returns once the memory is free); ``on_unload_done``.
  The core never issues two operations on one expert of one executor at once, and never unloads
  an expert a running batch uses (it pins it); the engine adds nothing to that.
- ``Dispatch`` -> one ``backend.infer`` of the batch; the verdict rules of
  ``orchestrator.experts_io`` decide each request's outcome; ``on_batch_done`` gets, per request,
  whether its classifier result calls for the subsequent (detector) step, which the core then
  queues. Failures go to the watchdog (``orchestrator.engine.watchdog``): a model whose process
  died is reloaded, a server that died, froze or holds a load or unload it will never finish is
  restarted through the shell's ``ServerControl`` (embedded servers only) with its resident set
  put back, and the operation (batch, load, unload) is tried again, ``RecoveryPolicy.attempts``
  times in all; a batch that still fails gives its requests an ``error`` verdict naming the cause
  and the attempts. During a restart ``serving()`` is False (health NOT_SERVING); new requests
  are accepted and queued meanwhile (the core keeps them; they run once the set is back).
- ``Complete`` / ``Reject`` -> the request's verdict.

Versions (changing experts while serving, docs/serving.md): each load returns the version it
took (the backend names it in the load); the engine keeps it per (executor, expert) and writes it
into every verdict that expert gives there. Every ``version_poll_s`` it asks the backend for the
newest version on disk of each expert it holds; where that differs (``coserve expert add
--replace`` installed one, or ``coserve expert rollback`` took one back), ``core.refresh`` unloads
the held copy once no batch runs on it, and the next load takes the version on disk.

Events are handled one at a time (asyncio is single-threaded and no core call awaits), ``now`` is
the event loop's clock since the engine started, so the same code runs on a virtual clock in tests
and the decision sequence can be compared with the simulator's.

Limits kept: at most ``queue_bound`` requests accepted and not yet answered (``QueueFull``
beyond); a request whose deadline passes gets ``DeadlinePassed``. A request whose caller gave up
(deadline passed, client gone: its task cancelled) is withdrawn from the core at once, so it
holds no queue slot and no expert is loaded for it; a batch already running for it finishes and
its result is dropped. Deadlines also reach the core, which serves a step about to miss its
deadline before the head of its queue (``ExecutorQueue.select_head``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator import experts_io
from orchestrator.aio import cancel_and_wait
from orchestrator.coe import CoEDefinition
from orchestrator.core.coe_graph import graph_from_coe
from orchestrator.core.decisions import Complete, Decision, Dispatch, Load, Reject, Unload
from orchestrator.core.profile import CostProfile
from orchestrator.core.scheduler import CoreScheduler, Request
from orchestrator.core.serve_config import ServeConfig
from orchestrator.engine.backend import Backend
from orchestrator.engine.types import (
    BackendUnavailable,
    BadRequest,
    DeadlinePassed,
    EngineStatus,
    ExecutorStatus,
    ExpertUse,
    InspectRequest,
    NotServing,
    QueueFull,
    ResidentExpert,
    Verdict,
)
from orchestrator.engine.watchdog import (
    Action,
    Fault,
    Recovery,
    RecoveryPolicy,
    ServerControl,
    Watchdog,
    classify,
    decide,
)
from orchestrator.errors import CoserveError, ServerUnavailableError
from orchestrator.images import ImageDecodeError, decode_image

#: seconds of accounted-bytes history kept for comparing measurements (a sampler step is ms long)
_ACCOUNTING_KEEP_S = 5.0


@dataclass
class _Pending:
    """One accepted request while the core works on it."""

    request: InspectRequest
    core: Request
    arrival: float
    future: asyncio.Future[Verdict]
    tensors: dict[str, np.ndarray]  # expert -> its input tensor (C, H, W)
    outcome: str = "pass"
    defect_class: int | None = None
    scores: tuple[float, ...] = ()
    experts: list[ExpertUse] = field(default_factory=list)
    compute_s: float = 0.0
    switch_s: float = 0.0
    error: str | None = None
    unavailable: str | None = None


#: how many of the core's latest decisions ``Engine.decisions`` keeps
DECISION_LOG = 10_000


@dataclass
class EngineStats:
    """Counters for reports (``coserve demo``/``bench``): switches are loads from storage."""

    #: Load decisions from storage the core issued (what ``coserve bench`` counts as switches)
    switches: int = 0
    loads: int = 0
    load_failures: int = 0
    unloads: int = 0
    unload_failures: int = 0
    batches: int = 0
    reloads: int = 0
    #: watchdog recoveries that worked: reloads of a dead model process plus server restarts
    recoveries: int = 0
    restarts: int = 0
    restore_loads: int = 0  # experts put back after a restart
    version_swaps: int = 0  # held copies unloaded because another version is now on disk
    retries: int = 0  # operations (batch, load, unload) tried again after a recovery
    load_s: float = 0.0
    unload_s: float = 0.0
    compute_s: float = 0.0


class Engine:
    """Implements ``orchestrator.engine.types.InspectionService`` over a core and a backend."""

    def __init__(
        self,
        coe: CoEDefinition,
        config: ServeConfig,
        profile: CostProfile,
        backend: Backend,
        *,
        policy: str | None = None,
        queue_bound: int = 10_000,
        versions: Mapping[str, str] | None = None,
        source: str = "serve config",
        server_control: ServerControl | None = None,
        recovery: RecoveryPolicy | None = None,
        version_poll_s: float = 2.0,
    ) -> None:
        self.coe = coe
        #: executor -> what the shell set aside of its configured budget before ``config`` (the
        #: embedded server's growth and the pages its model processes share; set by the shell,
        #: ``serve.reserved_bytes``): said in Status, not an excess in ``observe_footprint``
        self.reserved_bytes: dict[str, int] = {}
        self.config = config
        self.backend = backend
        self.graph = graph_from_coe(coe, profile, source)
        self.core = CoreScheduler(self.graph, config, profile, policy)
        self.policy = policy or config.policy
        self.queue_bound = queue_bound
        #: the version a verdict names where the backend did not say which one it loaded
        self.versions = dict(versions or {})
        #: seconds between looks for a new version on disk (0: never look)
        self.version_poll_s = version_poll_s
        #: (executor, expert) -> the version its load took (module doc)
        self.loaded_versions: dict[tuple[str, str], str] = {}
        self._version_watch: asyncio.Task[None] | None = None
        #: keep the accounted bytes' recent history (``observe_footprint``; the shell turns it on
        #: where a memory sampler feeds the engine)
        self.track_accounting = False
        self._accounting: dict[str, collections.deque[tuple[float, int]]] = {}
        self.stats = EngineStats()
        #: the last ``DECISION_LOG`` decisions the core returned, in order (the equivalence test
        #: compares these); bounded, so that a service that runs for months does not grow with it
        #: (counts for reports are in ``stats``)
        self.decisions: collections.deque[Decision] = collections.deque(maxlen=DECISION_LOG)
        #: unloads that failed (their memory stays counted); a watchdog's work
        self.unload_errors: list[str] = []
        #: called as ``listener(event, executor, expert)`` right after each load ("load") or
        #: unload ("unload") the backend confirmed (a memory sampler reads the footprint then),
        #: and with ("restart", executor, "") when the executor's server was restarted, before
        #: its resident set is put back (a sampler reads the new server's idle memory then);
        #: a listener must return at once and not raise
        self.listeners: list[Callable[[str, str, str], None]] = []
        #: called by ``status`` for more notes (the shell's measurers: ``GpuMemoryWatch.notes``)
        self.note_sources: list[Callable[[], Sequence[str]]] = []
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count()
        self._started = False
        self._placed = asyncio.Event()
        self._placing: set[tuple[str, str]] = set()
        self._draining = False
        self._t0: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loading_since: dict[tuple[str, str], float] = {}
        self._ready_at: dict[tuple[str, str], float] = {}
        self._load_errors: dict[tuple[str, str], str] = {}
        self._unloading: set[tuple[str, str]] = set()
        #: restarts and reloads (the watchdog module doc); ``watchdog.records`` times each
        self.watchdog = Watchdog(server_control, self._restore, self.now, recovery, on_record=self._on_recovery)

    # -- clock -------------------------------------------------------------------------------
    def now(self) -> float:
        loop = asyncio.get_running_loop()
        if self._t0 is None:
            self._t0 = loop.time()
        return loop.time() - self._t0

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, wait: bool = True) -> None:
        """Start the clock (``now`` = 0) and issue the initial placement's loads.

        Requests are accepted from here on (the core queues those whose expert is still loading,
        as the simulator's cold start does), but ``serving()`` (what health checks report) turns
        true only once every placement load has finished. ``wait``: return only then.
        """
        self._t0 = asyncio.get_running_loop().time()
        self._started = True
        decisions = self.core.initial_placement(0.0)
        self._placing = {(d.executor, d.expert) for d in decisions if isinstance(d, Load)}
        if not self._placing:
            self._placed.set()
        self._apply(decisions)
        self.watchdog.start_monitor()
        if self.version_poll_s > 0 and callable(getattr(self.backend, "latest_versions", None)):
            self._version_watch = asyncio.ensure_future(self._watch_versions())
        if wait:
            await self._placed.wait()

    def serving(self) -> bool:
        """True once the initial placement is loaded, until draining starts (health checks);
        False while the watchdog restarts a server (until its resident set is back)."""
        return self._placed.is_set() and not self._draining and not self.watchdog.recovering()

    async def drain(self) -> None:
        """Stop accepting; return once every accepted request has its verdict."""
        self._draining = True
        self.watchdog.freeze()
        await self._stop_version_watch()
        while self._pending:
            await asyncio.sleep(0.01)
        await self._wait_tasks()

    async def _wait_tasks(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def release_all(self, executors: Sequence[str] | None = None, timeout_s: float = 10.0) -> None:
        """Unload every expert the core holds on ``executors`` (default: all): a clean stop on a
        server that is not ours to stop. Best effort within ``timeout_s``; call after ``drain``."""
        names = list(executors) if executors is not None else self.core.executor_names()
        jobs = [
            self.backend.unload(name, expert)
            for name in names
            for expert in self.core.pool(name).resident()
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), timeout_s)

    async def close(self) -> None:
        """Cancel what runs (nothing is answered after this) and close the backend."""
        self._draining = True
        await self.watchdog.stop()
        await self._stop_version_watch()
        for task in list(self._tasks):
            task.cancel()
        await self._wait_tasks()
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(NotServing("the service stopped before this component was inspected"))
        self._pending.clear()
        await self.backend.close()

    async def _stop_version_watch(self) -> None:
        task, self._version_watch = self._version_watch, None
        await cancel_and_wait(task)

    # -- versions ------------------------------------------------------------------------------
    async def _watch_versions(self) -> None:
        """Every ``version_poll_s``: the newest version on disk of each expert held somewhere
        (``backend.latest_versions``, which reads the repository off the event loop), handed
        to ``check_versions``. A failed look is tried again at the next tick."""
        latest_of = self.backend.latest_versions  # type: ignore[attr-defined]
        while True:
            await asyncio.sleep(self.version_poll_s)
            held = sorted({expert for _, expert in self.loaded_versions})
            if not held:
                continue
            try:
                latest = await latest_of(held)
            except (OSError, CoserveError):
                continue
            self.check_versions(latest)

    def check_versions(self, latest: Mapping[str, str]) -> int:
        """Compare what each executor holds with ``latest`` (expert -> newest version on disk;
        an expert missing from it is left alone) and have the core replace every copy that
        differs (``CoreScheduler.refresh``, which leaves a copy being unloaded or loaded alone).
        Returns how many copies the core unloads now."""
        now = self.now()
        swaps = 0
        for (executor, expert), version in sorted(self.loaded_versions.items()):
            want = latest.get(expert)
            if want is None or want == version:
                continue
            decisions = self.core.refresh(executor, expert, now)
            swaps += sum(isinstance(d, Unload) for d in decisions)
            self._apply(decisions)
        self.stats.version_swaps += swaps
        return swaps

    # -- measured memory -------------------------------------------------------------------------
    def observe_footprint(
        self, executor: str, measured_bytes: int, reserved_bytes: int = 0, began_at: float | None = None
    ) -> None:
        """A measurement of ``executor``'s footprint (its server's growth over idle plus its model
        processes, ``orchestrator.engine.memory_sampler``); ``reserved_bytes``: what the shell
        set aside of the configured budget for the server's own growth (not in the core's
        pool). Whatever exceeds what the core accounts is counted against the budget, and the
        core evicts if that puts it over (``CoreScheduler.correct_footprint``): the budget is a
        promise about measured memory, so a profile that was short corrects the accounting,
        never the promise. Call it on the event loop.

        ``began_at`` (``time.monotonic``): when the measurement's reads began. The core's figure
        it is compared with is then the highest the core accounted from then until now: a
        reading made before an unload was confirmed or a batch ended still holds that memory,
        and must not read as an excess once the core has let it go."""
        pool = self.core.pool(executor)
        accounted = pool.used_bytes - pool.unattributed_bytes
        if began_at is not None:
            accounted = max(accounted, self._accounted_since(executor, began_at))
        excess = int(measured_bytes) - accounted - reserved_bytes
        self._apply(self.core.correct_footprint(executor, excess, self.now()))

    def _accounted_since(self, executor: str, since: float) -> int:
        """The highest figure the core accounted for ``executor`` (without the measured excess)
        at any time from ``since`` (``time.monotonic``) until now (``_track_accounting``)."""
        best = 0
        for at, value in reversed(self._accounting.get(executor, ())):
            best = max(best, value)
            if at <= since:  # the figure in effect when ``since`` came
                break
        return best

    def _track_accounting(self) -> None:
        """Note each executor's accounted bytes when they changed (after every event), keeping
        the last few seconds: what ``observe_footprint`` compares a reading with."""
        now = time.monotonic()
        for name in self.core.executor_names():
            pool = self.core.pool(name)
            value = pool.used_bytes - pool.unattributed_bytes
            hist = self._accounting.setdefault(name, collections.deque())
            if hist and hist[-1][1] == value:
                continue
            hist.append((now, value))
            while len(hist) > 1 and hist[1][0] < now - _ACCOUNTING_KEEP_S:
                hist.popleft()

    def version_of(self, executor: str, expert: str) -> str:
        """The version ``expert`` runs on ``executor`` (what a verdict names)."""
        return self.loaded_versions.get((executor, expert)) or self.versions.get(expert, "1")

    # -- InspectionService ---------------------------------------------------------------------
    def component_types(self) -> Sequence[str]:
        return sorted(self.coe.routing)

    def input_shape(self, component_type: str) -> tuple[int, int, int]:
        rule = self.coe.routing.get(component_type)
        if rule is None:
            raise BadRequest(f"unknown component type {component_type!r} (this CoE has {len(self.coe.routing)} types)")
        return self.coe.experts[rule.classifier].input_shape

    async def inspect(self, request: InspectRequest) -> Verdict:
        """One verdict for ``request`` (see the module doc for the errors)."""
        if not self._started or self._draining:
            raise NotServing("the service is not accepting requests (not started yet, or draining)")
        rule = self.coe.routing.get(request.component_type)
        if rule is None:
            raise BadRequest(
                f"unknown component type {request.component_type!r} (this CoE has {len(self.coe.routing)} types)"
            )
        tensors = {rule.classifier: self._tensor(request, rule.classifier)}
        if rule.detector is not None:
            tensors[rule.detector] = self._tensor(request, rule.detector)
        if len(self._pending) >= self.queue_bound:
            raise QueueFull(f"{len(self._pending)} components are queued (bound {self.queue_bound}); retry later")
        now = self.now()
        if request.deadline is not None and request.deadline <= asyncio.get_running_loop().time():
            raise DeadlinePassed("the request's deadline had passed when it arrived")
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Verdict] = loop.create_future()
        timeout = None if request.deadline is None else max(0.0, request.deadline - loop.time())
        core_req = Request(rid, now, rule.classifier, rule.detector, None if timeout is None else now + timeout)
        self._pending[rid] = _Pending(request, core_req, now, future, tensors)
        self._apply(self.core.on_arrival(core_req, now))
        # The future is awaited as it is (no shield, no wait_for): each of those puts one more
        # event-loop iteration between the verdict and this caller. The deadline is a timer
        # that answers the future with DeadlinePassed; a cancelled caller cancels the future,
        # which nothing answers after the withdrawal (``_answer`` skips a done future).
        timer = None if timeout is None else loop.call_later(timeout, self._expire, rid, timeout)
        try:
            return await future
        except asyncio.CancelledError:  # the caller went away: leave no queued work behind
            self._withdraw(rid)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, rid: int, timeout: float) -> None:
        """The deadline of request ``rid`` passed before its verdict: withdraw it, answer DeadlinePassed."""
        p = self._pending.get(rid)
        if p is None or p.future.done():
            return
        self._withdraw(rid)
        p.future.set_exception(
            DeadlinePassed(f"no verdict within the request's deadline ({timeout:.3f} s after it was accepted)")
        )

    def _withdraw(self, rid: int) -> None:
        """Take back a request nobody waits for any more (the core drops its queued step; a
        batch already running for it finishes, its result unused)."""
        if self._pending.pop(rid, None) is not None:
            self._apply(self.core.withdraw(rid, self.now()))

    def _tensor(self, request: InspectRequest, expert: str) -> np.ndarray:
        shape = self.coe.experts[expert].input_shape
        if isinstance(request.image, bytes):
            try:
                return decode_image(request.image, shape)
            except ImageDecodeError as exc:
                raise BadRequest(f"image of component {request.component_id!r}: {exc}") from None
        image = np.asarray(request.image)
        if image.dtype != np.float32 or image.shape != shape:
            raise BadRequest(
                f"image of component {request.component_id!r}: raw tensor must be float32 {list(shape)}, "
                f"got {image.dtype} {list(image.shape)}"
            )
        return image

    def status(self) -> EngineStatus:
        """Executors with their budgets, bytes in use and resident experts (the core's accounting)."""
        execs = []
        for name in self.core.executor_names():
            pool = self.core.pool(name)
            execs.append(
                ExecutorStatus(
                    name=name,
                    kind=self.core.executor_kind(name),
                    server=self.server_of(name),
                    budget_bytes=int(pool.budget_bytes),
                    used_bytes=int(pool.used_bytes),
                    queue_depth=self.core.queued_steps_on(name),
                    resident=tuple(
                        ResidentExpert(e, pool.entry_bytes(e), self.version_of(name, e))
                        for e in sorted(pool.resident())
                    ),
                )
            )
        servers_of = getattr(self.backend, "servers", None)
        servers = list(servers_of()) if callable(servers_of) else []
        notes = [
            f"server {s.name}: memory accounted from the cost profile (an external server's processes "
            "cannot be seen)" for s in servers if s.accounting == "profile"
        ]
        notes += [
            f"executor {e.name}: {r / 1e6:.1f} MB of its configured {(e.budget_bytes + r) / 1e6:.1f} MB budget set "
            "aside for its server's growth and the pages its model processes share (held once); "
            f"its experts get {e.budget_bytes / 1e6:.1f} MB"
            for e in execs if (r := self.reserved_bytes.get(e.name, 0))
        ]
        notes += [
            f"executor {e.name}: {self.core.pool(e.name).unattributed_bytes / 1e6:.1f} MB measured beyond the "
            "cost profile's figures, counted against its budget"
            for e in execs if self.core.pool(e.name).unattributed_bytes > 0
        ]
        notes += [note for source in self.note_sources for note in source()]
        return EngineStatus(
            policy=self.policy, serving=self.serving(), servers=servers, executors=execs, queued=len(self._pending),
            queue_bound=self.queue_bound, notes=tuple(notes + self.unload_errors[-5:] + self._watchdog_notes()),
        )

    def _watchdog_notes(self) -> list[str]:
        lost = [f"server {name} lost: {why}" for name, why in sorted(self.watchdog.lost.items())]
        recent = [
            f"watchdog: {r.action} of {r.expert or r.server} {'took' if r.ok else 'FAILED after'} {r.seconds:.2f} s ({r.why})"
            for r in self.watchdog.records[-3:]
        ]
        return lost + recent

    def server_of(self, executor: str) -> str:
        """The server an executor runs on (its backend knows; the executor's name otherwise)."""
        server_of = getattr(self.backend, "server_of", None)
        return str(server_of(executor)) if callable(server_of) else executor

    # -- executing decisions ---------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _apply(self, decisions: list[Decision]) -> None:
        self.decisions.extend(decisions)
        self.stats.switches += sum(1 for d in decisions if isinstance(d, Load) and d.tier == "disk")
        if self.track_accounting:
            self._track_accounting()
        for d in decisions:
            if isinstance(d, Load):
                self._loading_since[(d.executor, d.expert)] = self.now()
                self._spawn(self._load_then_report(d))
            elif isinstance(d, Unload):
                self._spawn(self._unload_then_report(d))
            elif isinstance(d, Dispatch):
                self._spawn(self._run_batch(d))
            elif isinstance(d, Complete):
                self._answer(d.request_id)
            elif isinstance(d, Reject):
                p = self._pending.get(d.request_id)
                if p is not None:
                    p.outcome = "error"
                    p.error = p.error or self._reject_reason(d)
                self._answer(d.request_id)

    def _reject_reason(self, d: Reject) -> str:
        p = self._pending.get(d.request_id)
        if p is not None:
            for (_, expert), why in self._load_errors.items():
                if expert in (p.core.preliminary, p.core.subsequent):
                    return f"expert {expert} failed to load: {why}"
        return d.reason

    async def _do_load(self, d: Load) -> None:
        began = self.now()
        try:
            version = await self._recovering(
                d.executor, d.expert, "load", lambda: self.backend.load(d.executor, d.expert, d.tier)
            )
        except CoserveError as exc:
            self.stats.load_failures += 1
            self._load_errors[(d.executor, d.expert)] = str(exc)
            if isinstance(exc, ServerUnavailableError):
                self._server_lost(str(exc))
            raise
        finally:
            self.stats.load_s += self.now() - began
        self.stats.loads += 1
        if version is not None:
            self.loaded_versions[(d.executor, d.expert)] = str(version)
        self._load_errors.pop((d.executor, d.expert), None)
        self._ready_at[(d.executor, d.expert)] = self.now()
        self._notify("load", d.executor, d.expert)

    async def _load_then_report(self, d: Load) -> None:
        ok = True
        try:
            await self._do_load(d)
        except CoserveError:
            ok = False
        self._apply(self.core.on_load_done(d.executor, d.expert, self.now(), ok=ok))
        if self._placing:
            self._placing.discard((d.executor, d.expert))
            if not self._placing:
                self._placed.set()

    async def _unload_then_report(self, d: Unload) -> None:
        began = self.now()
        self._unloading.add((d.executor, d.expert))
        try:
            # A restart frees the expert for good (it is not put back: it is being unloaded),
            # so an unload cut off by one, or stuck until one, is done once the server is back.
            await self._recovering(d.executor, d.expert, "unload", lambda: self.backend.unload(d.executor, d.expert),
                                   done_by_restart=True)
        except CoserveError as exc:
            # The memory may still be held, so the core is not told it is free: its bytes stay
            # counted against the budget (never exceeded) until a watchdog settles it.
            self.stats.unload_failures += 1
            self.unload_errors.append(f"{d.expert} on {d.executor}: {exc}")
            if isinstance(exc, ServerUnavailableError):
                self._server_lost(str(exc))
            return
        finally:
            self._unloading.discard((d.executor, d.expert))
        self.stats.unloads += 1
        self.stats.unload_s += self.now() - began
        self._ready_at.pop((d.executor, d.expert), None)
        self.loaded_versions.pop((d.executor, d.expert), None)
        self._notify("unload", d.executor, d.expert)
        self._apply(self.core.on_unload_done(d.executor, d.expert, self.now()))

    def _notify(self, event: str, executor: str, expert: str) -> None:
        for listener in self.listeners:
            listener(event, executor, expert)

    def _server_lost(self, why: str) -> None:
        """A server stopped answering while the core waits on it: every request still pending
        gets ``BackendUnavailable`` now rather than waiting for an event that will not come. (The
        core keeps their steps; their late results, if any, are dropped. Restarting the server
        and retrying is the watchdog's job.)"""
        for rid in list(self._pending):
            self._pending[rid].unavailable = why
            self._answer(rid)

    async def _run_batch(self, d: Dispatch) -> None:
        pendings = [self._pending.get(rid) for rid in d.request_ids]
        tensors = [p.tensors[d.expert] if p is not None else self._blank(d.expert) for p in pendings]
        # one image (sequential calls): a view with the batch axis, not a copy of the image
        images = tensors[0][None] if len(tensors) == 1 else np.stack(tensors)
        began = self.now()
        ready = self._ready_at.get((d.executor, d.expert), began)
        version = self.version_of(d.executor, d.expert)  # what runs it: the expert is pinned
        outputs: dict[str, np.ndarray] | None = None
        failure: str | None = None
        try:
            outputs = await self._infer_with_recovery(d, images)
        except ServerUnavailableError as exc:
            failure = str(exc)
            for p in pendings:
                if p is not None:
                    p.unavailable = failure
            self._server_lost(failure)
        except CoserveError as exc:
            failure = f"expert {d.expert} failed: {exc}"
        took = self.now() - began
        self.stats.batches += 1
        self.stats.compute_s += took
        verdicts: dict[int, bool] = {}
        for i, (rid, p) in enumerate(zip(d.request_ids, pendings, strict=True)):
            calls_detector = False
            if p is not None:
                p.compute_s += took
                p.switch_s += max(0.0, ready - max(p.arrival, self._loading_since.get((d.executor, d.expert), ready)))
                p.experts.append(ExpertUse(d.expert, version))
                if outputs is None:
                    p.outcome, p.error = "error", failure
                else:
                    calls_detector = self._record(p, d, outputs, i)
            verdicts[rid] = calls_detector
        self._apply(self.core.on_batch_done(d.batch_id, self.now(), verdicts))

    def _blank(self, expert: str) -> np.ndarray:
        return np.zeros(self.coe.experts[expert].input_shape, dtype=np.float32)

    async def _infer_with_recovery(self, d: Dispatch, images: np.ndarray) -> dict[str, np.ndarray]:
        return await self._recovering(d.executor, d.expert, "batch", lambda: self.backend.infer(d.executor, d.expert, images))

    async def _recovering(
        self, executor: str, expert: str, what: str, call: Callable[[], Any], *, done_by_restart: bool = False
    ) -> Any:
        """``await call()`` under the watchdog's policy (its module doc): tried up to
        ``attempts`` times, a dead model process reloaded (Triton keeps it READY: a plain retry
        would fail again), an embedded server restarted with its resident set put back.
        ``done_by_restart``: a restart does the call's work (an unload), so it is not tried again.
        Raises the last error, its message saying what was tried, when it gives up."""
        server = self.server_of(executor)
        wd = self.watchdog
        attempt = 0
        while True:
            attempt += 1
            await wd.wait(server)
            if server in wd.lost:
                raise ServerUnavailableError(f"Triton server {server} is lost: {wd.lost[server]}")
            generation = wd.generation(server)
            try:
                return await call()
            except CoserveError as exc:
                fault = classify(exc, restarted_meanwhile=wd.interrupted(server, generation))
                step = decide(fault, attempt, restartable=wd.restartable(server), policy=wd.policy)
                if step.action is Action.FAIL:
                    if attempt == 1 and fault is Fault.OTHER:
                        raise
                    if fault is Fault.SERVER_LOST:
                        raise ServerUnavailableError(f"{exc} ({step.reason})") from None
                    raise CoserveError(f"{exc} ({step.reason})") from None
                self.stats.retries += 1
                if step.action is Action.RELOAD:
                    if what == "batch":  # a load or unload is itself what clears a dead process
                        await self._reload(executor, expert, str(exc))
                    continue
                if wd.recovering(server):  # cut off by a restart under way: wait for it
                    ok = await wd.restart(server, "restart under way")
                elif wd.generation(server) != generation:  # cut off by a restart already done
                    ok = server not in wd.lost
                else:  # a failure of the server as it is now
                    ok = await wd.restart(server, f"{fault.value} during a {what} of {expert} on {executor}: {exc}")
                if not ok:
                    raise ServerUnavailableError(f"Triton server {server} is lost: {wd.lost.get(server, str(exc))}") from None
                if done_by_restart:
                    return None

    async def _reload(self, executor: str, expert: str, why: str) -> None:
        """Fresh instances of ``expert`` (its process died); a failure is left to the next try."""
        began = self.now()
        self.stats.reloads += 1
        try:
            await self.backend.reload(executor, expert)
        except CoserveError as exc:
            self.watchdog.note_reload(self.server_of(executor), expert, f"{why}; reload failed: {exc}", began, False)
            return
        self.watchdog.note_reload(self.server_of(executor), expert, why, began, True)

    def _on_recovery(self, record: Recovery) -> None:
        if record.ok:
            self.stats.recoveries += 1
            self.stats.restarts += record.action == "restart"

    async def _restore(self, server: str) -> int:
        """Load back, on a restarted ``server``, every expert the core counts as resident on its
        executors (loaded and not being unloaded); returns how many. Its accounting is untouched."""
        for executor in self.core.executor_names():
            if self.server_of(executor) == server:
                self._notify("restart", executor, "")
        keys = [
            key for key in sorted(self._ready_at)
            if self.server_of(key[0]) == server and key not in self._unloading
        ]
        versions = await asyncio.gather(*(self.backend.load(executor, expert) for executor, expert in keys))
        for key, version in zip(keys, versions, strict=True):
            if version is not None:  # the newest on disk now: a replaced expert comes back new
                self.loaded_versions[key] = str(version)
        self.stats.restore_loads += len(keys)
        return len(keys)

    def _record(self, p: _Pending, d: Dispatch, outputs: Mapping[str, np.ndarray], i: int) -> bool:
        """Set ``p``'s outcome from row ``i`` of the batch; True if the detector must run next."""
        if d.stage == 0:
            logits = outputs[experts_io.CLASSIFIER_OUTPUT][i : i + 1]
            no_defect = bool(experts_io.classifier_no_defect(logits)[0])
            row = logits[0].astype(np.float64)
            probs = np.exp(row - row.max())
            probs /= probs.sum()
            p.scores = tuple(float(x) for x in probs)
            if not no_defect:
                p.outcome, p.defect_class = "defect", int(np.argmax(row))
                return False
            p.outcome = "pass"
            return p.core.subsequent is not None
        boxes = outputs["boxes"][i : i + 1]
        objectness = outputs["objectness"][i : i + 1]
        _, h, w = self.coe.experts[d.expert].input_shape
        ok = bool(experts_io.detector_pass(boxes, objectness, (h, w))[0])
        p.scores = (float(np.max(objectness)) if objectness.size else 0.0,)
        p.outcome = "pass" if ok else "fail"
        return False

    def _answer(self, rid: int) -> None:
        p = self._pending.pop(rid, None)
        if p is None or p.future.done():
            return
        if p.unavailable is not None:
            p.future.set_exception(BackendUnavailable(p.unavailable))
            return
        latency = self.now() - p.arrival
        p.future.set_result(
            Verdict(
                board_id=p.request.board_id,
                component_id=p.request.component_id,
                component_type=p.request.component_type,
                outcome=p.outcome,  # type: ignore[arg-type]
                defect_class=p.defect_class,
                scores=p.scores,
                experts=tuple(p.experts),
                queue_s=max(0.0, latency - p.compute_s - p.switch_s),
                compute_s=p.compute_s,
                switch_s=p.switch_s,
                error=p.error,
            )
        )
