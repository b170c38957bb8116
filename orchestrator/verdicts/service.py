"""``RecordedService``: an ``InspectionService`` that logs every verdict before answering it and
answers a retry from the log.

``inspect(request)``:

1. the log is not writable (``store.health()`` not ok): ``VerdictLogUnavailable`` (gRPC
   UNAVAILABLE, naming the log and why) before anything is inspected: the service refuses new
   work rather than answering without a record;
2. the same (board id, component id) is being inspected right now (a client that retried before
   its first answer came): wait for that one and answer its verdict (if that caller gave up and
   withdrew its request, inspect afresh);
3. the log has a verdict for (board id, component id) that is not ``error``: answer it without
   inspecting again (a ``BadRequest`` if the retry names another component type: that is not a
   retry but a client bug). Its times are the recorded ones;
4. otherwise ``inner.inspect``, then ``await store.append(verdict)`` (committed), then answer. If
   the append fails the caller gets ``VerdictLogUnavailable`` and the verdict is not answered.

``error`` verdicts (an expert failed to load or infer, a lost server's leftovers) are logged too,
for the record, but a retry inspects again: such failures are usually transient, and the newer
verdict is the one a later retry gets. Refusals (``InspectionError``: queue full, deadline,
bad request) are not verdicts and are not logged.

``serving()`` is false while the log is failing, so health checks report NOT_SERVING; ``status()``
adds the log's state to the notes. ``health()`` is the store's (``LogHealth``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from orchestrator.engine.types import (
    BadRequest,
    EngineStatus,
    InspectionService,
    InspectRequest,
    NotServing,
    Verdict,
)
from orchestrator.verdicts.store import LogHealth, LogUnavailable, VerdictStore


class VerdictLogUnavailable(NotServing):
    """The verdict log cannot record (full disk, unwritable): new work is refused (UNAVAILABLE)."""


class RecordedService:
    """``inner`` with every verdict logged in ``store`` first (module doc)."""

    def __init__(self, inner: InspectionService, store: VerdictStore) -> None:
        self.inner = inner
        self.store = store
        self._inflight: dict[tuple[str, str], asyncio.Future[Verdict]] = {}
        #: retries answered from the log (and from an inspection already running) since the start
        self.replayed = 0

    def health(self) -> LogHealth:
        return self.store.health()

    def serving(self) -> bool:
        return self.inner.serving() and self.store.writable

    def component_types(self) -> Sequence[str]:
        return self.inner.component_types()

    def input_shape(self, component_type: str) -> tuple[int, int, int]:
        return self.inner.input_shape(component_type)

    def status(self) -> EngineStatus:
        status = self.inner.status()
        health = self.store.health()
        return replace(status, serving=status.serving and health.ok, notes=(*status.notes, health.describe()))

    async def inspect(self, request: InspectRequest) -> Verdict:
        key = (request.board_id, request.component_id)
        while True:
            self._check_log()
            running = self._inflight.get(key)
            if running is None:
                break
            try:
                verdict = await asyncio.shield(running)
            except asyncio.CancelledError:
                if not running.cancelled():
                    raise  # this caller was cancelled
                continue  # the first caller withdrew: look again
            self.replayed += 1
            return self._same_type(verdict, request)
        try:
            recorded = self.store.lookup(*key)
        except LogUnavailable as exc:
            raise VerdictLogUnavailable(str(exc)) from None
        if recorded is not None:
            self.replayed += 1
            return self._same_type(recorded.verdict, request)
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            verdict = await self.inner.inspect(request)
            try:
                await self.store.append(verdict)
            except LogUnavailable as exc:
                raise VerdictLogUnavailable(str(exc)) from None
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            # a waiting retry gets the same refusal (it is retried by its own client again)
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(verdict)
        return verdict

    def _check_log(self) -> None:
        if not self.store.writable:
            raise VerdictLogUnavailable(self.store.health().describe())

    @staticmethod
    def _same_type(verdict: Verdict, request: InspectRequest) -> Verdict:
        if verdict.component_type != request.component_type:
            raise BadRequest(
                f"component {request.component_id!r} of board {request.board_id!r} was inspected as type "
                f"{verdict.component_type!r}; this request says {request.component_type!r} (a retry must repeat "
                "the request; a new component needs a new id)"
            )
        return verdict
