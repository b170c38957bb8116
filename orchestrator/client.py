"""The typed Python client of the factory API (``coserve.v1.Inspection``).

``InspectionClient`` (asyncio) and ``SyncInspectionClient`` (blocking) take and return the
domain types of ``orchestrator.engine.types``: ``InspectRequest`` in, ``Verdict`` /
``EngineStatus`` out, plus ``BoardSummary`` at the end of a board stream. A request's absolute
``deadline`` (``time.monotonic()``) is sent as the milliseconds left when it is sent.

Errors: a refused or failed call raises a ``RemoteError`` carrying the gRPC status (``code``,
``status``) and the server's message (``details``). Where the server names the engine's error
class (trailing metadata ``coserve-error``), the exception is also that domain error, so
``except QueueFull`` works the same in-process and over the wire:

===========================  =====================  ==========================================
raised                       also an instance of    gRPC status
===========================  =====================  ==========================================
``RemoteBadRequest``         ``BadRequest``         INVALID_ARGUMENT
``RemoteQueueFull``          ``QueueFull``          RESOURCE_EXHAUSTED (from the engine's queue)
``RemoteDeadlinePassed``     ``DeadlinePassed``     DEADLINE_EXCEEDED (also the call's timeout)
``RemoteBackendUnavailable`` ``BackendUnavailable`` UNAVAILABLE (no Triton reachable)
``RemoteNotServing``         ``NotServing``         UNAVAILABLE (starting or draining)
``ExpertFailed``             -                      INTERNAL: an expert failed; ``.verdict``
``RemoteError``              -                      anything else (server down, ...)
===========================  =====================  ==========================================

TLS: pass ``credentials=tls_credentials(root_cert_file=..., cert_file=..., key_file=...)`` (the
CA that signed the server's certificate, and a client certificate where the server requires one);
``server_name=`` checks the server's certificate for that name instead of the target's host.

In a board stream a refused component is not an exception: its verdict has outcome ``error`` and
an error text starting with the status name (``refusal_status`` reads it back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.engine.types import (
    BackendUnavailable,
    BadRequest,
    DeadlinePassed,
    EngineStatus,
    InspectionError,
    InspectRequest,
    NotServing,
    QueueFull,
    Verdict,
)
from orchestrator.frontend import convert
from orchestrator.frontend import inspection_pb2 as pb
from orchestrator.frontend import inspection_pb2_grpc as pb_grpc
from orchestrator.frontend.board import BoardSummary
from orchestrator.frontend.servicer import SERVICE_NAME
from orchestrator.frontend.status_codes import ERROR_CLASS_KEY, EXPERT_FAILED, VERDICT_KEY

__all__ = [
    "BoardSummary",
    "ExpertFailed",
    "InspectionClient",
    "RemoteBackendUnavailable",
    "RemoteBadRequest",
    "RemoteDeadlinePassed",
    "RemoteError",
    "RemoteNotServing",
    "RemoteQueueFull",
    "SyncInspectionClient",
    "refusal_status",
    "tls_credentials",
]


def tls_credentials(
    root_cert_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """Channel TLS credentials from PEM files: ``root_cert_file`` the CA(s) to trust for the
    server (None: the system's), ``cert_file``/``key_file`` this client's certificate (both or
    neither; for a server that requires client certificates)."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("tls_credentials: cert_file and key_file go together")

    def read(path: str | Path | None) -> bytes | None:
        return Path(path).read_bytes() if path is not None else None

    return grpc.ssl_channel_credentials(read(root_cert_file), read(key_file), read(cert_file))


def _channel_options(options: Sequence[tuple[str, Any]], server_name: str | None) -> list[tuple[str, Any]]:
    if server_name is None:
        return list(options)
    return [("grpc.ssl_target_name_override", server_name), *options]


class RemoteError(InspectionError):
    """A call the server refused or could not finish.

    ``code``: the ``grpc.StatusCode``; ``status``: its name (``"RESOURCE_EXHAUSTED"``);
    ``details``: the server's message; ``method``: the RPC; ``verdict``: the component's verdict
    where the server sent one (``ExpertFailed``).
    """

    def __init__(
        self, method: str, code: grpc.StatusCode, details: str, verdict: Verdict | None = None
    ) -> None:
        self.method = method
        self.code = code
        self.status: str = code.name
        self.details = details
        self.verdict = verdict
        super().__init__(f"{method}: {code.name}: {details}")


class RemoteBadRequest(RemoteError, BadRequest):
    """INVALID_ARGUMENT: the request is wrong (the message names the field)."""


class RemoteQueueFull(RemoteError, QueueFull):
    """RESOURCE_EXHAUSTED from the engine's bounded queue: nothing was queued; retry later."""


class RemoteDeadlinePassed(RemoteError, DeadlinePassed):
    """DEADLINE_EXCEEDED: the request's deadline or the call's timeout passed."""


class RemoteBackendUnavailable(RemoteError, BackendUnavailable):
    """UNAVAILABLE: the engine cannot reach any Triton server."""


class RemoteNotServing(RemoteError, NotServing):
    """UNAVAILABLE: the service is starting or draining."""


class ExpertFailed(RemoteError):
    """INTERNAL from ``Inspect``: an expert failed to load or infer; ``verdict`` says which."""


_BY_NAME: dict[str, type[RemoteError]] = {
    "BadRequest": RemoteBadRequest,
    "QueueFull": RemoteQueueFull,
    "DeadlinePassed": RemoteDeadlinePassed,
    "BackendUnavailable": RemoteBackendUnavailable,
    "NotServing": RemoteNotServing,
    EXPERT_FAILED: ExpertFailed,
}
#: without the server's ``coserve-error`` name only these codes are unambiguous (gRPC itself
#: answers RESOURCE_EXHAUSTED for a too-large message, UNAVAILABLE for a server that is down)
_BY_CODE: dict[grpc.StatusCode, type[RemoteError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: RemoteBadRequest,
    grpc.StatusCode.DEADLINE_EXCEEDED: RemoteDeadlinePassed,
}


def remote_error(method: str, err: grpc.RpcError) -> RemoteError:
    """The ``RemoteError`` (subclass) for a failed call ``err`` (sync or asyncio)."""
    code = err.code()
    details = err.details() or ""
    metadata = dict(err.trailing_metadata() or ())
    name = metadata.get(ERROR_CLASS_KEY)
    cls = _BY_NAME.get(name) if isinstance(name, str) else None
    if cls is None:
        cls = _BY_CODE.get(code, RemoteError)
    verdict = None
    raw = metadata.get(VERDICT_KEY)
    if isinstance(raw, bytes):
        try:
            verdict = convert.verdict_from_proto(pb.Verdict.FromString(raw))
        except Exception:  # a verdict we cannot read must not hide the error itself
            verdict = None
    return cls(method, code, details, verdict)


def refusal_status(verdict: Verdict) -> str | None:
    """For an ``error`` verdict from a board stream: the gRPC status name ``Inspect`` would have
    answered (``"RESOURCE_EXHAUSTED"``, ``"INVALID_ARGUMENT"``, ...), None if it is no refusal."""
    if verdict.outcome != "error" or not verdict.error:
        return None
    head = verdict.error.split(":", 1)[0]
    return head if head in grpc.StatusCode.__members__ else None


def _health_name(status: int) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


def _board_item(resp: pb.InspectBoardResponse) -> Verdict | BoardSummary:
    kind = resp.WhichOneof("kind")
    if kind == "verdict":
        return convert.verdict_from_proto(resp.verdict)
    if kind == "summary":
        return convert.summary_from_proto(resp.summary)
    raise ValueError("InspectBoard sent a response with neither verdict nor summary")


class InspectionClient:
    """asyncio client of ``target`` (``HOST:PORT``). Create and use it on one running event loop.

    ``timeout``: the default per-call timeout in seconds (None: no gRPC deadline).
    ``credentials``: TLS (``tls_credentials``); None: plaintext. ``server_name``: the name the
    server's certificate must carry, when it is not the target's host.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.timeout = timeout
        opts = _channel_options(options, server_name)
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(target, credentials, options=opts)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=opts)
        self._stub = pb_grpc.InspectionStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    async def inspect(self, request: InspectRequest, *, timeout: float | None = None) -> Verdict:
        """The verdict for one component. Raises a ``RemoteError`` subclass (``ExpertFailed`` for
        an expert failure, with the verdict) or ``BadRequest`` for an image it cannot send."""
        msg = convert.request_to_proto(request, now=time.monotonic())
        try:
            out = await self._stub.Inspect(msg, timeout=self._timeout(timeout))
        except grpc.aio.AioRpcError as err:
            raise remote_error("Inspect", err) from None
        return convert.verdict_from_proto(out)

    async def inspect_board(
        self,
        requests: Iterable[InspectRequest] | AsyncIterable[InspectRequest],
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[Verdict | BoardSummary]:
        """Stream one board: yields each ``Verdict`` as the server sends it (completion order), then
        one ``BoardSummary``. Requests are sent while verdicts arrive (a slow producer should be an
        async iterable: a blocking one stalls the loop). Leaving the loop early cancels the stream,
        which withdraws the board's pending images on the server. Raises ``RemoteError`` if the
        stream itself fails, and ``BadRequest`` for an image it cannot send (the stream is
        cancelled then)."""
        call = self._stub.InspectBoard(timeout=self._timeout(timeout))
        failed: list[BaseException] = []

        async def write() -> None:
            try:
                if isinstance(requests, AsyncIterable):
                    async for request in requests:
                        await call.write(convert.request_to_proto(request, now=time.monotonic()))
                else:
                    for request in requests:
                        await call.write(convert.request_to_proto(request, now=time.monotonic()))
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return  # the call ended; the read side reports why
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a request we cannot send: end the stream with it
                failed.append(exc)
                call.cancel()

        writer = asyncio.create_task(write())
        try:
            while True:
                try:
                    resp = await call.read()
                except grpc.aio.AioRpcError as err:
                    if failed:
                        raise failed[0] from None
                    raise remote_error("InspectBoard", err) from None
                except asyncio.CancelledError:
                    if failed:
                        raise failed[0] from None
                    raise
                if resp is grpc.aio.EOF:
                    break
                yield _board_item(resp)
            if failed:
                raise failed[0]
        finally:
            call.cancel()  # a no-op once the stream has ended
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def inspect_board_all(
        self,
        requests: Iterable[InspectRequest] | AsyncIterable[InspectRequest],
        *,
        timeout: float | None = None,
    ) -> tuple[list[Verdict], BoardSummary]:
        """``inspect_board`` collected: the verdicts in arrival order and the summary."""
        verdicts: list[Verdict] = []
        summary: BoardSummary | None = None
        async for item in self.inspect_board(requests, timeout=timeout):
            if isinstance(item, BoardSummary):
                summary = item
            else:
                verdicts.append(item)
        if summary is None:
            raise RemoteError(
                "InspectBoard", grpc.StatusCode.UNKNOWN, "the stream ended without a board summary"
            )
        return verdicts, summary

    async def status(self, *, timeout: float | None = None) -> EngineStatus:
        """The engine's status (servers, executors, resident experts, queues, policy)."""
        try:
            out = await self._stub.Status(pb.StatusRequest(), timeout=self._timeout(timeout))
        except grpc.aio.AioRpcError as err:
            raise remote_error("Status", err) from None
        return convert.status_from_proto(out)

    async def health(self, service: str = SERVICE_NAME, *, timeout: float | None = None) -> str:
        """The standard health status of ``service`` (``""``: the whole server): ``"SERVING"`` or
        ``"NOT_SERVING"``. Raises ``RemoteError`` (e.g. UNAVAILABLE when nothing listens)."""
        try:
            out = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self._timeout(timeout)
            )
        except grpc.aio.AioRpcError as err:
            raise remote_error("Health.Check", err) from None
        return _health_name(out.status)

    async def wait_until_serving(self, timeout: float, *, poll_s: float = 0.05) -> None:
        """Wait until health says SERVING (retrying while the server is not up yet); raises
        ``TimeoutError`` naming the last state after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                last = await self.health(timeout=max(0.05, min(1.0, end - time.monotonic())))
                if last == "SERVING":
                    return
            except RemoteError as exc:
                last = str(exc)
            if time.monotonic() >= end:
                raise TimeoutError(f"{self.target} not SERVING after {timeout:g} s (last: {last})")
            await asyncio.sleep(poll_s)

    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled)."""
        await self._channel.close()

    async def __aenter__(self) -> InspectionClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class SyncInspectionClient:
    """Blocking client of ``target`` with the same methods and errors as ``InspectionClient``."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.timeout = timeout
        opts = _channel_options(options, server_name)
        if credentials is not None:
            self._channel = grpc.secure_channel(target, credentials, options=opts)
        else:
            self._channel = grpc.insecure_channel(target, options=opts)
        self._stub = pb_grpc.InspectionStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def inspect(self, request: InspectRequest, *, timeout: float | None = None) -> Verdict:
        msg = convert.request_to_proto(request, now=time.monotonic())
        try:
            out = self._stub.Inspect(msg, timeout=self._timeout(timeout))
        except grpc.RpcError as err:
            raise remote_error("Inspect", err) from None
        return convert.verdict_from_proto(out)

    def inspect_board(
        self, requests: Iterable[InspectRequest], *, timeout: float | None = None
    ) -> Iterator[Verdict | BoardSummary]:
        """Yields each verdict as it arrives, then the summary (requests are sent from gRPC's
        own thread while verdicts arrive). Closing the generator early cancels the stream."""
        failed: list[BaseException] = []

        def messages() -> Iterator[pb.InspectRequest]:
            try:
                for request in requests:
                    yield convert.request_to_proto(request, now=time.monotonic())
            except Exception as exc:  # gRPC would only log it: keep it for the caller
                failed.append(exc)
                raise

        call = self._stub.InspectBoard(messages(), timeout=self._timeout(timeout))
        try:
            for resp in call:
                yield _board_item(resp)
        except grpc.RpcError as err:
            if failed:
                raise failed[0] from None
            raise remote_error("InspectBoard", err) from None
        finally:
            call.cancel()

    def status(self, *, timeout: float | None = None) -> EngineStatus:
        try:
            out = self._stub.Status(pb.StatusRequest(), timeout=self._timeout(timeout))
        except grpc.RpcError as err:
            raise remote_error("Status", err) from None
        return convert.status_from_proto(out)

    def health(self, service: str = SERVICE_NAME, *, timeout: float | None = None) -> str:
        try:
            out = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self._timeout(timeout)
            )
        except grpc.RpcError as err:
            raise remote_error("Health.Check", err) from None
        return _health_name(out.status)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SyncInspectionClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
