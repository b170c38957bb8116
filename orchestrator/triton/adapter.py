"""The Triton adapter: the one place (with model_config.py) that talks to Triton through tritonclient.

Async gRPC (``tritonclient.grpc.aio``). Every Triton/gRPC error is mapped to the project's own
exceptions (``orchestrator.errors``) with the server's message kept in ``server_message``:

=================================  =============================================================
situation                          exception
=================================  =============================================================
server not reachable               ServerUnavailableError
load/config of a name not in repo  ModelNotFoundError
load failed (bad file, KIND_GPU..) ModelLoadError
infer on a model not loaded        ModelNotReadyError (ModelNotFoundError if not in the repo)
any other infer failure            InferenceError
unload not finished in time        ModelUnloadTimeoutError
server stops answering             ServerUnavailableError (within ~3 s, see "Liveness" below)
=================================  =============================================================

Unload is *confirmed*: Triton's unload call returns at once, the index shows the model UNLOADING
while its process finishes (~1.1 s on the Python backend, docs/triton.md), then UNAVAILABLE.
``unload`` therefore waits until the index no longer shows the model READY/UNLOADING *and* the process probe
(a callable: model name -> that model's living processes, e.g. ``EmbeddedTriton.process_probe()``)
returns nothing. Without a probe (an external server, e.g. in a container, whose processes we
cannot see) only the index state is awaited, so memory may still be held for a moment after
``unload`` returns; ``UnloadResult.processes_confirmed`` says which kind of confirmation it was.

Loads and unloads of one model are serialised by a per-model asyncio lock: concurrent
load/unload of the same model is a known Triton race. Different models proceed concurrently.
An adapter belongs to one event loop (the gRPC channel is created lazily on first use, inside it).

Liveness: every call that has not answered after ``probe_interval_s`` is watched by a liveness
probe (``is_server_live`` with a 1 s deadline) beside it. A server that answers no probe for
``unresponsive_after_s`` (frozen, wedged, overloaded past use) fails the call with
``ServerUnavailableError`` saying so, and the adapter remembers it: later calls fail at once
(after one probe) instead of each waiting out its own deadline, until the server answers again.
A call that runs into its own deadline while the server answers probes is the model's problem,
not the server's: ``ModelLoadError`` / ``InferenceError`` naming the deadline. Deadlines are the
caller's, scaled to the expert (``orchestrator.triton.deadlines``).

A model process that dies while its load is in flight is seen through the process probe: Triton
then keeps the model LOADING for good (measured on 2.51: the backend waits for the stub's
handshake without a timeout; only a server restart frees the name), so ``load`` fails at once
naming the dead pid, and later loads of that name fail at once with the same cause.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from orchestrator.errors import (
    CoserveError,
    InferenceError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
    ModelUnloadTimeoutError,
    ServerUnavailableError,
    TritonError,
)
from orchestrator.triton.deadlines import UNLOAD_S
from orchestrator.triton.model_config import ModelConfig

#: model name -> the living processes serving it (any objects with a ``pid``); [] when gone
ProcessProbe = Callable[[str], Sequence[Any]]

#: index states in which a model still holds (or is about to hold) resources
LIVE_STATES = frozenset({"READY", "LOADING", "UNLOADING"})


@dataclass(frozen=True)
class IndexEntry:
    """One row of the server's repository index."""

    name: str
    version: str
    state: str  # READY | LOADING | UNLOADING | UNAVAILABLE | "" (never loaded)
    reason: str


@dataclass(frozen=True)
class LoadResult:
    """A finished load: ``seconds`` is the wall time of the load call (ready on return)."""

    name: str
    seconds: float


@dataclass(frozen=True)
class UnloadResult:
    """A confirmed unload.

    ``call_seconds``: until Triton's unload call returned; ``index_seconds``: until the index
    stopped showing it READY/UNLOADING; ``gone_seconds``: until it was gone (index *and*, with a
    probe, its processes exited). ``processes_confirmed`` is False without a probe.
    """

    name: str
    call_seconds: float
    index_seconds: float
    gone_seconds: float
    processes_confirmed: bool
    #: the model's process had died before the unload: memory is free, the index may stay UNLOADING
    index_stuck: bool = False


def _status(exc: InferenceServerException) -> str:
    return str(exc.status() or "")


def _message(exc: InferenceServerException) -> str:
    # Triton ends many messages with ";\n": trim that, keep the rest verbatim.
    return str(exc.message() or exc).strip().rstrip(";").rstrip()


# gRPC reports a refused/broken connection as UNAVAILABLE; Triton itself uses UNAVAILABLE for
# "model not ready" too, so the connection case is recognised by the transport's own wording.
_CONNECTION_WORDS = (
    "failed to connect",
    "connection refused",
    "socket closed",
    "connect failed",
    "connection reset",
    "dns resolution failed",
    "no connection",
    "broken pipe",
)


def _is_connection_error(exc: InferenceServerException, deadline_is_unavailable: bool = True) -> bool:
    status, message = _status(exc), _message(exc).lower()
    if "DEADLINE_EXCEEDED" in status:
        # A control call that times out means the server did not answer (e.g. a black-holed
        # address); an inference that times out is a slow inference, not a dead server.
        return deadline_is_unavailable
    return "UNAVAILABLE" in status and any(word in message for word in _CONNECTION_WORDS)


_URL_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")

#: seconds a pending load may have no living model process before it counts as dead (see
#: ``TritonAdapter._with_process_watch``; Triton's own "not healthy" answer comes within ~1 s)
_ABSENT_S = 2.0
#: seconds between looks for a pending load's model process. A look lists the server's children
#: and reads their memory (several ms of CPU on a 2-core box); looking every 50 ms was most of the
#: orchestrator's CPU while switch-heavy policies served (py-spy, benchmarks/serve_trace.py), and a
#: load of a small expert takes 0.2-0.4 s. Detection needs ``_ABSENT_S`` of absence anyway.
_WATCH_S = 0.25

#: the config parameter a forced reload bumps, so Triton creates fresh instances (see ``reload``)
GENERATION_PARAMETER = "coserve_generation"


def check_grpc_url(url: str) -> str:
    """``url`` if it is ``HOST:PORT`` of a gRPC endpoint; a ``CoserveError`` naming the problem if not.

    tritonclient takes anything and fails later with misleading errors (an ``http://`` URL or
    ``garbage:xx`` used to surface as "no such model").
    """
    if "://" in url:
        hostport = url.split("://", 1)[1].rstrip("/") or "127.0.0.1:8001"
        raise CoserveError(f"Triton URL {url!r}: give HOST:PORT of the gRPC endpoint without a scheme, e.g. {hostport}")
    match = _URL_RE.match(url)
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise CoserveError(f"Triton URL {url!r}: must be HOST:PORT with a port in 1-65535, e.g. 127.0.0.1:8001")
    return url


def _uncancel(task: asyncio.Task[Any]) -> int:
    """Take back one cancellation request of ``task`` (Python 3.11+); the requests left (0 on
    3.10, which does not count them)."""
    uncancel = getattr(task, "uncancel", None)
    return int(uncancel()) if uncancel is not None else 0


class _Liveness:
    """The liveness watch of one pending call (module doc, ``TritonAdapter._call``).

    Armed with a timer: after ``probe_interval_s`` without an answer it probes the server every
    ``probe_interval_s`` (each probe with a 1 s deadline). A server restarted meanwhile (the
    adapter's ``epoch`` moved on), or one that answers no probe for ``unresponsive_after_s``
    (which the adapter then remembers in ``unresponsive``), sets ``failure`` and cancels ``task``,
    the task awaiting the call. ``answered``: a probe got an answer during the call. ``stop``
    when the call is over."""

    def __init__(self, adapter: TritonAdapter, task: asyncio.Task[Any], epoch: int) -> None:
        self.adapter = adapter
        self.task = task
        self.epoch = epoch
        self.failure: ServerUnavailableError | None = None
        self.answered = False
        self._began = time.monotonic()
        self._probing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            adapter.probe_interval_s, self._start
        )

    def _start(self) -> None:
        self._timer = None
        self._probing = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        adapter = self.adapter
        last_answer = self._began
        while True:
            cut = adapter._cut_off(self.epoch)
            if cut is not None:
                self._fail(cut)
                return
            live = await adapter._probe_live()
            now = time.monotonic()
            if live:
                last_answer = now
                self.answered = True
            elif now - last_answer >= adapter.unresponsive_after_s:
                adapter.unresponsive = (
                    f"stopped answering: no reply to liveness probes for {now - last_answer:.1f} s "
                    "(frozen, hung or overloaded)"
                )
                self._fail(ServerUnavailableError(f"Triton server at {adapter.url} {adapter.unresponsive}"))
                return
            await asyncio.sleep(adapter.probe_interval_s)

    def _fail(self, failure: ServerUnavailableError) -> None:
        self.failure = failure
        self.task.cancel()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._probing is not None and self._probing is not asyncio.current_task():
            self._probing.cancel()
        self._probing = None


class TritonAdapter:
    """Async client of one Triton server (see the module docstring for the contracts)."""

    def __init__(
        self,
        url: str = "localhost:8001",
        *,
        process_probe: ProcessProbe | None = None,
        request_timeout_s: float | None = 60.0,
        poll_interval_s: float = 0.02,
        probe_interval_s: float = 0.5,
        unresponsive_after_s: float = 3.0,
    ) -> None:
        self.url = check_grpc_url(url)
        self.process_probe = process_probe
        self.request_timeout_s = request_timeout_s
        self.poll_interval_s = poll_interval_s
        self.probe_interval_s = probe_interval_s
        self.unresponsive_after_s = unresponsive_after_s
        #: why the server is considered unresponsive (None while it answers)
        self.unresponsive: str | None = None
        self._client: grpcclient.InferenceServerClient | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._wedged: dict[str, str] = {}  # model -> why Triton will never finish loading it
        self._generation = 0
        #: bumped by ``reconnect``: a call that began before it was cut off by a server restart
        self.epoch = 0

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def client(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self.url)
        return self._client

    async def close(self) -> None:
        """Close the gRPC channel (idempotent)."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def reconnect(self, url: str | None = None) -> None:
        """Talk to a restarted server (at ``url``, or the same address) from now on.

        The old channel is closed (calls still on it fail), and what was learnt about the old
        process is forgotten: that it stopped answering, and which names it would never finish
        loading (a restart frees them). Calls that began before fail with
        ``ServerUnavailableError`` rather than blame a model of the new server.
        """
        self.epoch += 1
        self.url = check_grpc_url(url) if url is not None else self.url
        self.unresponsive = None
        self._wedged.clear()
        await self.close()

    def _cut_off(self, epoch: int) -> ServerUnavailableError | None:
        if epoch == self.epoch:
            return None
        return ServerUnavailableError(f"Triton server at {self.url} was restarted during the call")

    async def __aenter__(self) -> TritonAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _unavailable(self, exc: InferenceServerException) -> ServerUnavailableError:
        return ServerUnavailableError(f"Triton server at {self.url} is not reachable", _message(exc))

    async def _call(self, coro: Awaitable[Any], deadline_is_unavailable: bool = True) -> Any:
        """Await a tritonclient call under the liveness watch (module doc); map connection failures.

        Other Triton errors are left to the caller. A deadline counts as an unreachable server
        only with ``deadline_is_unavailable`` and when the server answered no liveness probe
        meanwhile (an address that never answers); otherwise it is re-raised (status
        DEADLINE_EXCEEDED) for the caller to name.

        The call is awaited in the caller's own task, and the watch (``_Liveness``) starts only
        once it has been pending for ``probe_interval_s``: a call that answers before that (every
        inference of a healthy server) costs no extra task and no extra event-loop iteration,
        which a task per call plus ``asyncio.wait`` did (two or three iterations on the latency
        path of every ``Inspect``). When the watch gives up on the server it cancels the waiting
        task and this raises its ``ServerUnavailableError`` instead.
        """
        try:
            await self._check_responsive()
        except BaseException:
            if asyncio.iscoroutine(coro):
                coro.close()  # never started: close it rather than leave it unawaited
            raise
        epoch = self.epoch
        task = asyncio.current_task()
        assert task is not None, "TritonAdapter calls run in a task of the adapter's event loop"
        watch = _Liveness(self, task, epoch)
        try:
            return await coro
        except asyncio.CancelledError:
            if watch.failure is None:
                raise  # cancelled by someone else: the caller gave up
            if _uncancel(task) > 0:
                raise  # someone else cancelled it too: theirs wins
            raise watch.failure from None
        except InferenceServerException as exc:
            if watch.failure is not None:
                raise watch.failure from None
            cut = self._cut_off(epoch)
            if cut is not None:
                raise cut from None
            if _is_connection_error(exc, deadline_is_unavailable and not watch.answered):
                raise self._unavailable(exc) from None
            raise
        finally:
            watch.stop()

    async def _probe_live(self) -> bool:
        try:
            return bool(await self.client.is_server_live(client_timeout=1.0))
        except InferenceServerException:
            return False

    async def _check_responsive(self) -> None:
        """Fail at once (after one probe) while the server is known not to answer."""
        if self.unresponsive is None:
            return
        if await self._probe_live():
            self.unresponsive = None
            return
        raise ServerUnavailableError(f"Triton server at {self.url} {self.unresponsive}")

    # -- health --------------------------------------------------------------------------------
    async def server_live(self) -> bool:
        """True if the server answers live; False (not an error) if it cannot be reached."""
        try:
            return bool(await self.client.is_server_live(client_timeout=self.request_timeout_s))
        except InferenceServerException:
            return False

    async def server_ready(self) -> bool:
        """True if the server answers ready; False if it cannot be reached.

        With Triton's default ``--strict-readiness=true`` (an external server) this turns False
        while any model's last load failed; the embedded server runs with it off.
        """
        try:
            return bool(await self.client.is_server_ready(client_timeout=self.request_timeout_s))
        except InferenceServerException:
            return False

    async def server_version(self) -> str:
        """The server's version string (e.g. ``2.51.0``). Raises ServerUnavailableError if unreachable."""
        try:
            meta = await self._call(self.client.get_server_metadata(client_timeout=self.request_timeout_s))
        except InferenceServerException as exc:
            raise TritonError("cannot read the server metadata", _message(exc)) from None
        return str(meta.version)

    async def model_ready(self, name: str) -> bool:
        """True if ``name`` is loaded and ready. Raises ServerUnavailableError if unreachable."""
        try:
            return bool(
                await self._call(self.client.is_model_ready(name, client_timeout=self.request_timeout_s))
            )
        except InferenceServerException:
            return False  # Triton answers an error for names it does not know: not ready

    # -- repository ----------------------------------------------------------------------------
    async def index(self) -> list[IndexEntry]:
        """The repository index: every model directory plus its state (sorted by name)."""
        try:
            response = await self._call(self.client.get_model_repository_index(client_timeout=self.request_timeout_s))
        except InferenceServerException as exc:
            raise TritonError("cannot read the repository index", _message(exc)) from None
        entries = [IndexEntry(m.name, m.version, m.state, m.reason) for m in response.models]
        return sorted(entries, key=lambda e: (e.name, e.version))

    async def _index_states(self, name: str) -> list[str]:
        return [e.state for e in await self.index() if e.name == name]

    async def load(
        self, name: str, config: ModelConfig | None = None, timeout_s: float | None = None
    ) -> LoadResult:
        """Load (or reload) ``name``; ``config`` is the *whole* config (replaces config.pbtxt).

        Returns once the model is ready. On a *reload* (e.g. another instance count) the old
        instances' processes exit shortly (~1 s) after this returns; callers that account memory
        should wait on the process probe. A load with the config the model already runs is a
        no-op in Triton (see ``reload`` to force fresh instances). ``timeout_s`` (default: the
        adapter's ``request_timeout_s``) bounds the call. Raises ModelNotFoundError for a name the
        repository does not have, ModelLoadError (server message kept) for any other failure,
        including a deadline passed while the server answers and a model process that died
        during the load; ServerUnavailableError when the server cannot be reached or stops answering.
        """
        if config is not None and config.name != name:
            raise ModelLoadError(f"cannot load {name!r}: the override config is named {config.name!r}")
        if name in self._wedged:
            raise ModelLoadError(f"cannot load {name!r}: {self._wedged[name]}")
        timeout = timeout_s if timeout_s is not None else self.request_timeout_s
        async with self._lock(name):
            began = time.perf_counter()
            before = {p.pid for p in self.process_probe(name)} if self.process_probe is not None else set()
            request = self._call(
                self.client.load_model(
                    name, config=config.to_json() if config is not None else None, client_timeout=timeout
                )
            )
            try:
                await self._with_process_watch(name, request, before)
            except InferenceServerException as exc:
                message = _message(exc)
                if not await self._in_repository(name):
                    raise ModelNotFoundError(
                        f"cannot load {name!r}: no such model in the server's repository", message
                    ) from None
                if "DEADLINE_EXCEEDED" in _status(exc):
                    message = f"not ready within its {timeout:.1f} s deadline although the server answers"
                raise ModelLoadError(f"cannot load {name!r}", message) from None
            return LoadResult(name, time.perf_counter() - began)

    async def reload(
        self, name: str, config: ModelConfig, timeout_s: float | None = None
    ) -> LoadResult:
        """Load ``name`` with fresh instances even if Triton already has it READY with ``config``.

        The recovery for a model whose process died (Triton keeps it READY and answers every
        request with "Stub process ... is not healthy"; docs/triton.md): a load with the same
        config is a no-op, so this sends ``config`` with the parameter ``coserve_generation``
        bumped, which makes Triton build new instances and retire the old ones.
        """
        self._generation += 1
        fresh = dataclasses.replace(
            config, parameters={**config.parameters, GENERATION_PARAMETER: str(self._generation)}
        )
        return await self.load(name, fresh, timeout_s=timeout_s)

    async def _with_process_watch(self, name: str, request: Awaitable[Any], before: set[int]) -> None:
        """Await a load ``request``; fail it if the model has no living process for a while.

        A Python-backend load spawns its model process within milliseconds and that process
        lives until the load returns. One that dies after its handshake makes Triton fail the
        load itself within ~1 s ("not healthy", with its own words, which we keep); one that dies
        before it leaves the load hanging for good. So: no living process of this load for
        ``_ABSENT_S`` while the load is pending and the server answers means it died. (The embedded
        server runs up to 4 loads at once; a fifth, queued inside Triton, would read as dead, so
        callers keep concurrent loads below that, as the demo and engine do.)
        """
        if self.process_probe is None:
            await request
            return
        probe = self.process_probe
        epoch = self.epoch
        call = asyncio.ensure_future(request)
        seen: set[int] = set()
        absent_since: float | None = None
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=_WATCH_S)
                if done:
                    call.result()
                    return
                alive = {p.pid for p in probe(name)} - before
                seen |= alive
                now = time.monotonic()
                if alive:
                    absent_since = None
                    continue
                absent_since = absent_since or now
                if now - absent_since < _ABSENT_S:
                    continue
                if not await self._probe_live():
                    continue  # a frozen server spawns nothing: the liveness watch on ``call`` decides
                cut = self._cut_off(epoch)
                if cut is not None:
                    raise cut  # its server was restarted: the name is free on the new one
                which = f"pid {', '.join(str(p) for p in sorted(seen))}" if seen else "it exited before it could be seen"
                self._wedged[name] = (
                    f"its model process died during the load ({which}); Triton keeps the model "
                    "LOADING for good (only a server restart frees the name)"
                )
                raise ModelLoadError(f"cannot load {name!r}: {self._wedged[name]}")
        finally:
            if not call.done():
                call.cancel()

    async def _in_repository(self, name: str) -> bool:
        """Whether the index lists ``name``; an unreachable server raises (it must not read as "no such model")."""
        try:
            return any(e.name == name for e in await self.index())
        except ServerUnavailableError:
            raise
        except TritonError:
            return False

    async def unload(self, name: str, timeout_s: float = UNLOAD_S) -> UnloadResult:
        """Unload ``name`` and return only once it is gone (see the module docstring).

        Unloading a model that is not loaded is not an error (it returns at once). Raises
        ModelNotFoundError for a name the repository index does not list (Triton itself accepts
        any name; models loaded from bytes over gRPC are not in the index, so not supported here) and ModelUnloadTimeoutError
        (naming the state and the pids still alive) when it is not gone within ``timeout_s``.

        A model that reads READY while the process probe finds none of its processes has a dead
        process (docs/triton.md): its memory is already free and Triton may leave it UNLOADING
        for good, so that unload returns after the call with ``index_stuck`` set.
        """
        async with self._lock(name):
            dead_process = False
            if self.process_probe is not None and not self.process_probe(name):
                dead_process = "READY" in await self._index_states(name)
            began = time.perf_counter()
            try:
                await self._call(self.client.unload_model(name, client_timeout=self.request_timeout_s))
            except InferenceServerException as exc:
                message = _message(exc)
                if not await self._in_repository(name):
                    raise ModelNotFoundError(f"cannot unload {name!r}: no such model", message) from None
                raise TritonError(f"cannot unload {name!r}", message) from None
            call_seconds = time.perf_counter() - began
            # Triton answers an unload of an unknown name with success; the index tells.
            states = await self._index_states(name)
            if not states:
                raise ModelNotFoundError(f"cannot unload {name!r}: no such model in the server's repository")
            if dead_process:
                return UnloadResult(name, call_seconds, call_seconds, call_seconds, True, index_stuck=True)
            deadline = began + timeout_s
            index_seconds: float | None = None
            alive: Sequence[Any] = ()
            while True:
                if index_seconds is None:
                    states = await self._index_states(name)
                    if not any(s in LIVE_STATES for s in states):
                        index_seconds = time.perf_counter() - began
                if index_seconds is not None:
                    alive = self.process_probe(name) if self.process_probe is not None else ()
                    if not alive:
                        return UnloadResult(
                            name,
                            call_seconds,
                            index_seconds,
                            time.perf_counter() - began,
                            processes_confirmed=self.process_probe is not None,
                        )
                if time.perf_counter() > deadline:
                    pids = ", ".join(str(getattr(p, "pid", p)) for p in alive) or "none"
                    raise ModelUnloadTimeoutError(
                        f"model {name!r} not gone {timeout_s:.1f} s after unload "
                        f"(index state {'/'.join(states) or 'absent'}, model processes alive: {pids})"
                    )
                await asyncio.sleep(self.poll_interval_s)

    async def model_config(self, name: str) -> ModelConfig:
        """The config the server is using for a loaded model (or its repository config)."""
        try:
            response = await self._call(self.client.get_model_config(name, client_timeout=self.request_timeout_s))
        except InferenceServerException as exc:
            raise await self._not_available(name, exc, "cannot read the config of") from None
        return ModelConfig.from_proto(response.config)

    async def statistics(self, name: str | None = None) -> dict[str, Any]:
        """Triton's inference statistics (JSON-like dict) for one model or all loaded models."""
        try:
            return dict(
                await self._call(
                    self.client.get_inference_statistics(name or "", as_json=True, client_timeout=self.request_timeout_s)
                )
            )
        except InferenceServerException as exc:
            raise await self._not_available(name or "", exc, "cannot read statistics of") from None

    async def _not_available(self, name: str, exc: InferenceServerException, what: str) -> TritonError:
        """ModelNotReadyError if ``name`` is in the repository (just not loaded), else ModelNotFoundError."""
        message = _message(exc)
        if await self._in_repository(name):
            return ModelNotReadyError(f"{what} {name!r}: model is not loaded", message)
        return ModelNotFoundError(f"{what} {name!r}: no such model", message)

    # -- inference -----------------------------------------------------------------------------
    async def infer(
        self,
        name: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one request; ``inputs`` maps tensor names to arrays (batch axis first).

        Returns every output (or only ``outputs``) as numpy arrays. Raises ModelNotReadyError
        for a model that is in the repository but not loaded, ModelNotFoundError for an unknown
        name, InferenceError for any other failure (bad shape/type, unhealthy model process: see
        ``model_process_died``; a deadline passed while the server answers), ServerUnavailableError
        when the server cannot be reached or stops answering.
        """
        infer_inputs = []
        for tensor_name, array in inputs.items():
            array = np.ascontiguousarray(array)
            item = grpcclient.InferInput(tensor_name, list(array.shape), np_to_triton_dtype(array.dtype))
            item.set_data_from_numpy(array)
            infer_inputs.append(item)
        requested = [grpcclient.InferRequestedOutput(o) for o in outputs] if outputs else None
        timeout = timeout_s if timeout_s is not None else self.request_timeout_s
        try:
            result = await self._call(
                self.client.infer(name, infer_inputs, outputs=requested, client_timeout=timeout),
                deadline_is_unavailable=False,
            )
        except InferenceServerException as exc:
            message = _message(exc)
            if "DEADLINE_EXCEEDED" in _status(exc):
                message = f"no answer within its {timeout:.1f} s deadline although the server answers"
            lowered = message.lower()
            if "unknown model" in lowered or "is not found" in lowered or "no available versions" in lowered:
                raise await self._not_available(name, exc, "cannot infer on") from None
            raise InferenceError(f"inference on {name!r} failed", message) from None
        names = outputs or [o.name for o in result.get_response().outputs]
        return {o: result.as_numpy(o) for o in names}


def model_process_died(exc: BaseException) -> bool:
    """True if ``exc`` is Triton's answer for a model whose process died ("Stub process ... is
    not healthy"): the model still reads READY, and ``TritonAdapter.reload`` recovers it."""
    return isinstance(exc, TritonError) and "is not healthy" in (exc.server_message or "")
