"""The ``coserve.v1.Inspection`` servicer: translation only (proto -> convert -> engine -> proto).

Errors: an ``InspectionError`` from validation or from the engine becomes its gRPC status (the
table in ``orchestrator.engine.types``, ``status_codes.ERROR_STATUS``) with the error's message
and the trailing metadata ``coserve-error: <class>``. An ``error`` verdict answers ``Inspect``
with INTERNAL (message = the verdict's error; the verdict itself in ``coserve-verdict-bin``). Any
other exception is an engine bug: logged, INTERNAL.

``InspectBoard``: requests are read concurrently with answering; each request becomes its own
engine task, and its verdict is sent as soon as that task completes (not in request order). A
request the engine refuses, or that fails validation, does not end the stream: it is answered by
an ``error`` verdict whose error text starts with the status name ``Inspect`` would have
returned (``"RESOURCE_EXHAUSTED: ..."``; engine failures keep their own text). After the client
half-closes and every verdict is sent, one ``BoardSummary`` ends the stream. If the stream ends
early (client cancelled or disconnected, call deadline, server stop), every pending engine task is
cancelled, which withdraws its request from the engine (``InspectionService`` contract).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc

from orchestrator.engine.types import BadRequest, InspectionError, InspectionService, Verdict
from orchestrator.frontend import convert
from orchestrator.frontend import inspection_pb2 as pb
from orchestrator.frontend import inspection_pb2_grpc as pb_grpc
from orchestrator.frontend.board import BoardTally
from orchestrator.frontend.status_codes import (
    ERROR_CLASS_KEY,
    EXPERT_FAILED,
    VERDICT_KEY,
    error_class_name,
    status_for,
)

log = logging.getLogger(__name__)

#: the full name of the service (for health checking and reflection)
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Inspection"].full_name


class InspectionServicer(pb_grpc.InspectionServicer):
    """Serves ``coserve.v1.Inspection`` on a ``grpc.aio`` server, backed by ``service``.

    ``max_encoded_bytes``: the largest PNG/JPEG accepted (INVALID_ARGUMENT beyond it).
    """

    def __init__(
        self, service: InspectionService, *, max_encoded_bytes: int = convert.MAX_ENCODED_BYTES
    ) -> None:
        self._service = service
        self._max_encoded_bytes = max_encoded_bytes

    # --- helpers -------------------------------------------------------------------------------

    async def _inspect_one(self, msg: pb.InspectRequest, context: grpc.aio.ServicerContext) -> Verdict:
        """The verdict for one request (raises ``InspectionError``, ``BadRequest`` from validation
        included; other exceptions are bugs). An encoded image is decoded on a worker thread so
        that a large PNG does not stall other calls; a raw tensor is translated inline (one
        coroutine frame less on the latency path: this runs once per call)."""
        prepared = convert.prepare_request(
            msg,
            self._service,
            now=time.monotonic(),
            time_remaining=context.time_remaining(),
            max_encoded_bytes=self._max_encoded_bytes,
        )
        if prepared.needs_decoding:
            request = await asyncio.to_thread(prepared.finish)
        else:
            request = prepared.finish()
        return await self._service.inspect(request)

    @staticmethod
    async def _abort(
        context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, metadata: Any
    ) -> NoReturn:
        await context.abort(code, message, trailing_metadata=metadata)
        raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises

    # --- methods -------------------------------------------------------------------------------

    async def Inspect(self, request: pb.InspectRequest, context: grpc.aio.ServicerContext) -> pb.Verdict:
        """One image -> its verdict; errors as in the module docstring."""
        try:
            verdict = await self._inspect_one(request, context)
            out = convert.verdict_to_proto(verdict)
        except InspectionError as exc:
            await self._abort(context, status_for(exc), str(exc), ((ERROR_CLASS_KEY, error_class_name(exc)),))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an engine bug: never let it look like a bad request
            log.exception("Inspect failed for component %r", request.component_id)
            await self._abort(context, grpc.StatusCode.INTERNAL, f"engine error: {exc!r}", ())
        if verdict.outcome == "error":
            metadata = ((ERROR_CLASS_KEY, EXPERT_FAILED), (VERDICT_KEY, out.SerializeToString()))
            await self._abort(
                context,
                grpc.StatusCode.INTERNAL,
                verdict.error or "the component was not inspected",
                metadata,
            )
        return out

    async def InspectBoard(
        self, request_iterator: AsyncIterator[pb.InspectRequest], context: grpc.aio.ServicerContext
    ) -> None:
        """A board's images -> each verdict as soon as it is ready, then the summary.

        A coroutine writing with ``context.write`` (not an async generator), so that a cancelled
        call (client gone, deadline, server stop) raises into this frame at once and the
        ``finally`` withdraws every pending request before the handler ends.
        """
        done: asyncio.Queue[tuple[Verdict, pb.Verdict] | BaseException | None] = asyncio.Queue()
        pending: set[asyncio.Task[None]] = set()
        tally = BoardTally()

        async def answer(msg: pb.InspectRequest, stream_board: str) -> None:
            done.put_nowait(await self._stream_verdict(msg, stream_board, context))

        async def read() -> None:
            try:
                async for msg in request_iterator:
                    tally.request(msg.board_id, time.monotonic())
                    task = asyncio.create_task(answer(msg, tally.board_id))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                while pending:  # half-closed: wait for the last verdicts, then end
                    await asyncio.wait(set(pending))
                done.put_nowait(None)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a read failure ends the stream with it
                done.put_nowait(exc)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await done.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                verdict, out = item
                tally.verdict(verdict, time.monotonic())
                await context.write(pb.InspectBoardResponse(verdict=out))
            await context.write(pb.InspectBoardResponse(summary=convert.summary_to_proto(tally.summary())))
        finally:
            # Normal end: nothing is left. Early end: withdraw every pending request from the
            # engine (cancelling its task) before the handler returns.
            reader.cancel()
            for task in list(pending):
                task.cancel()
            await asyncio.gather(reader, *pending, return_exceptions=True)

    async def _stream_verdict(
        self, msg: pb.InspectRequest, stream_board: str, context: grpc.aio.ServicerContext
    ) -> tuple[Verdict, pb.Verdict]:
        """The verdict to stream for ``msg`` (and its message): the engine's, or an ``error``
        verdict for a refusal or an engine bug."""
        try:
            if msg.board_id and stream_board and msg.board_id != stream_board:
                raise BadRequest(
                    f"board_id is {msg.board_id!r}, but this stream inspects board {stream_board!r}"
                )
            verdict = await self._inspect_one(msg, context)
            return verdict, convert.verdict_to_proto(verdict)
        except InspectionError as exc:
            text = f"{status_for(exc).name}: {exc}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("InspectBoard failed for component %r", msg.component_id)
            text = f"{grpc.StatusCode.INTERNAL.name}: engine error: {exc!r}"
        refusal = Verdict(
            board_id=msg.board_id or stream_board,
            component_id=msg.component_id,
            component_type=msg.component_type,
            outcome="error",
            error=text,
        )
        return refusal, convert.verdict_to_proto(refusal)

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        """The engine's status."""
        try:
            return convert.status_to_proto(self._service.status())
        except Exception as exc:
            log.exception("Status failed")
            await self._abort(context, grpc.StatusCode.INTERNAL, f"engine error: {exc!r}", ())
