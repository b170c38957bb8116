"""The factory gRPC server: ``coserve.v1.Inspection`` + standard health checking + reflection.

``InspectionServer(service, listen)`` serves an ``InspectionService`` on a ``grpc.aio`` server:

- ``coserve.v1.Inspection`` (``servicer.InspectionServicer``);
- ``grpc.health.v1.Health``: the overall status (service ``""``) and ``coserve.v1.Inspection``
  are NOT_SERVING until ``service.serving()`` is true, then SERVING, following it (polled every
  ``health_poll_s``); ``set_serving(False)`` forces NOT_SERVING (draining, restarts),
  ``set_serving(None)`` follows the service again; ``stop`` sets NOT_SERVING for good;
- ``grpc.reflection.v1alpha.ServerReflection``, listing all three services, so that a client
  built from reflection alone (grpcurl, Postman) can call every method.

Messages up to ``max_message_bytes`` (default twice the encoded-image limit) are received, so that
an oversized image gets the front end's precise INVALID_ARGUMENT; beyond that gRPC itself refuses
the message with RESOURCE_EXHAUSTED.

TLS: ``credentials`` (from ``tls_credentials``: certificate chain and key, and optionally the CA
that client certificates must chain to, which makes them required: mTLS) serves the port with
TLS only; a plaintext client's handshake then fails (UNAVAILABLE on its side). Without it the port
is plaintext. Either way no method of the API loads or unloads a model: model control stays with
the engine, and Triton's own (unauthenticated) API stays on loopback or an internal network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from orchestrator.engine.types import InspectionService
from orchestrator.errors import CoserveError
from orchestrator.frontend import convert
from orchestrator.frontend import inspection_pb2_grpc as pb_grpc
from orchestrator.frontend.servicer import SERVICE_NAME, InspectionServicer

log = logging.getLogger(__name__)

#: where ``coserve serve`` listens unless told otherwise (loopback: exposing it is a decision)
DEFAULT_LISTEN = "127.0.0.1:50051"
#: the services this server registers (health checking and reflection included)
SERVICE_NAMES = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def tls_credentials(
    cert_file: str | Path, key_file: str | Path, client_ca_file: str | Path | None = None
) -> grpc.ServerCredentials:
    """Server TLS credentials from PEM files; with ``client_ca_file`` a client must present a
    certificate signed by one of its CAs (mutual TLS). Raises ``CoserveError`` naming an unreadable file."""

    def read(path: str | Path) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise CoserveError(f"TLS: cannot read {path}: {exc.strerror or exc}") from None

    ca = read(client_ca_file) if client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(read(key_file), read(cert_file))], root_certificates=ca, require_client_auth=ca is not None
    )


class ListenError(CoserveError):
    """The server cannot listen on the address (in use, not local, malformed)."""


class InspectionServer:
    """A ``grpc.aio`` server for ``service`` on ``listen`` (``HOST:PORT``; port 0 picks a free one).

    Use ``async with InspectionServer(...) as server:`` or ``await start()`` / ``await stop()``;
    both must run on the event loop that serves. ``port`` is the bound port after ``start``.
    """

    def __init__(
        self,
        service: InspectionService,
        listen: str = DEFAULT_LISTEN,
        *,
        credentials: grpc.ServerCredentials | None = None,
        max_encoded_bytes: int = convert.MAX_ENCODED_BYTES,
        max_message_bytes: int | None = None,
        health_poll_s: float = 0.05,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.credentials = credentials
        self.service = service
        self.listen = listen
        self.health_poll_s = health_poll_s
        self._servicer = InspectionServicer(service, max_encoded_bytes=max_encoded_bytes)
        limit = max_message_bytes if max_message_bytes is not None else 2 * max_encoded_bytes
        # no SO_REUSEPORT: a second server on a taken port must fail, not share it silently
        self._options = [("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0), *options]
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._override: bool | None = None
        self._reported: bool | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopped = False
        self.port = 0

    @property
    def address(self) -> str:
        """``HOST:PORT`` with the bound port (after ``start``), for clients."""
        host = self.listen.rsplit(":", 1)[0]
        if host in ("", "0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind, register the services and start serving; health NOT_SERVING until the engine serves.

        Raises ``ListenError`` if the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("InspectionServer.start called twice")
        server = grpc.aio.server(options=self._options)
        pb_grpc.add_InspectionServicer_to_server(self._servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(SERVICE_NAMES, server)
        for name in ("", SERVICE_NAME):
            await self._health.set(name, _NOT_SERVING)
        self._reported = False
        try:
            if self.credentials is not None:
                self.port = server.add_secure_port(self.listen, self.credentials)
            else:
                self.port = server.add_insecure_port(self.listen)
        except RuntimeError as exc:
            raise ListenError(f"cannot listen on {self.listen}: {exc}") from None
        if self.port == 0:  # older grpc returns 0 instead of raising
            raise ListenError(f"cannot listen on {self.listen} (address in use or invalid)")
        self._server = server
        await server.start()
        await self._sync_health()
        self._watch = asyncio.create_task(self._follow_service(), name="coserve-health")

    async def set_serving(self, serving: bool | None) -> None:
        """Force the health status (``False``: draining or restarting; ``True``: SERVING even if the
        engine says otherwise), or follow ``service.serving()`` again (``None``). Takes effect now."""
        self._override = serving
        await self._sync_health()

    def serving(self) -> bool:
        """What health checking reports now."""
        return bool(self._reported)

    async def _sync_health(self) -> None:
        if self._stopped:
            return
        if self._override is not None:
            want = self._override
        else:
            try:
                want = bool(self.service.serving())
            except Exception:
                log.exception("service.serving() failed; reporting NOT_SERVING")
                want = False
        if want != self._reported:
            for name in ("", SERVICE_NAME):
                await self._health.set(name, _SERVING if want else _NOT_SERVING)
            self._reported = want
            log.info("health: %s", "SERVING" if want else "NOT_SERVING")

    async def _follow_service(self) -> None:
        while True:
            await asyncio.sleep(self.health_poll_s)
            await self._sync_health()

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop: health NOT_SERVING, refuse new calls, let calls in flight finish for up to ``grace``
        seconds, then cancel the rest (which withdraws their requests from the engine). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self._health.enter_graceful_shutdown()
        self._reported = False
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._server is not None:
            await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Wait until the server stops (or ``timeout``); True if it stopped."""
        if self._server is None:
            return True
        return bool(await self._server.wait_for_termination(timeout))

    async def __aenter__(self) -> InspectionServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
