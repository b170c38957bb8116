"""The HTTP endpoint Prometheus scrapes: ``GET /metrics`` on ``HOST:PORT``.

``MetricsEndpoint(registry, listen)`` serves ``registry`` with ``prometheus_client``'s own
threaded WSGI server (a daemon thread; each scrape in a thread of its own, so a scrape never runs
on the engine's event loop). With ``cert_file``/``key_file`` it serves HTTPS only, and with
``client_ca_file`` a scraper must present a certificate signed by it. ``start`` raises ``CoserveError`` naming the address if it cannot be
bound; ``stop`` shuts it down and frees the port (idempotent).
"""

from __future__ import annotations

import threading
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_wsgi_server

from orchestrator.errors import CoserveError


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6) -> (host, port); ValueError if malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT (port 0-65535), got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsEndpoint:
    """Serves ``registry`` on ``listen`` (port 0 picks a free one; ``port`` after ``start``)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        listen: str,
        *,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        client_ca_file: str | Path | None = None,
    ) -> None:
        if (cert_file is None) != (key_file is None):
            raise ValueError("MetricsEndpoint: cert_file and key_file go together")
        self.registry = registry
        self.listen = listen
        self.tls = (cert_file, key_file, client_ca_file) if cert_file is not None else None
        self.host, self.port = split_listen(listen)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``HOST:PORT`` with the bound port, for scrapers (a wildcard host reads as loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}/metrics"

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("MetricsEndpoint.start called twice")
        try:
            if self.tls is None:
                self._server, self._thread = start_wsgi_server(self.port, self.host, self.registry)
            else:
                cert, key, ca = (str(p) if p is not None else None for p in self.tls)
                self._server, self._thread = start_wsgi_server(
                    self.port, self.host, self.registry, certfile=cert, keyfile=key, client_cafile=ca,
                    client_auth_required=ca is not None,
                )
        except OSError as exc:
            raise CoserveError(f"metrics: cannot listen on {self.listen}: {exc.strerror or exc}") from None
        self.port = int(self._server.server_address[1])

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
