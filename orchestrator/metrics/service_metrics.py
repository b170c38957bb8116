"""``ServiceMetrics``: the metrics of one running service, put together for ``coserve serve``.

It owns a registry of its own (two services in one process, as in tests, do not collide) with:
the request metrics (``MeteredService``, wrapped around what the front end serves), the engine's
state and counters (``EngineCollector``), the per-executor load/unload/switch counts
(``ExpertEvents``, an engine listener) and the process's own ``process_*`` metrics.

Thread safety: a scrape runs on the HTTP server's thread, while the engine lives on its event
loop and is not thread-safe. So the collector's ``read`` hands the snapshot to the loop
(``run_coroutine_threadsafe``) and waits up to ``read_timeout_s``; called on the loop itself (a
test rendering in-process) it reads directly. A loop that does not answer in time makes the
scrape report ``coserve_metrics_snapshot_ok 0`` instead of hanging.

The verdict log's health is read through ``verdict_log_health`` (a callable, e.g. the log
store's ``health``), None when no log is configured: the hook ``orchestrator.serve`` fills.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from orchestrator.engine.types import EngineStatus, InspectionService
from orchestrator.metrics.collector import EngineCollector, EngineSnapshot, ExpertEvents
from orchestrator.metrics.endpoint import MetricsEndpoint
from orchestrator.metrics.service import MeteredService, RequestMetrics


class MeteredEngine(Protocol):
    """What the metrics read of the engine (``orchestrator.engine.engine.Engine`` has it)."""

    stats: Any
    listeners: list[Callable[[str, str, str], None]]

    def serving(self) -> bool: ...

    def status(self) -> EngineStatus: ...


class ServiceMetrics:
    """Metrics of ``engine``; ``wrap`` the service the front end serves, ``start`` the endpoint."""

    def __init__(
        self,
        engine: MeteredEngine,
        *,
        verdict_log_health: Callable[[], object] | None = None,
        read_timeout_s: float = 2.0,
        process_metrics: bool = True,
    ) -> None:
        self.engine = engine
        self.verdict_log_health = verdict_log_health
        self.read_timeout_s = read_timeout_s
        self.registry = CollectorRegistry()
        self.requests = RequestMetrics(self.registry)
        self.events = ExpertEvents(serving=engine.serving)
        engine.listeners.append(self.events.on_event)
        self.registry.register(EngineCollector(self.read))
        if process_metrics:
            ProcessCollector(registry=self.registry)
        self.endpoint: MetricsEndpoint | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def wrap(self, service: InspectionService) -> MeteredService:
        return MeteredService(service, self.requests)

    def snapshot(self) -> EngineSnapshot:
        """The engine now (call on the engine's loop)."""
        health = None
        if self.verdict_log_health is not None:
            try:
                health = self.verdict_log_health()
            except Exception as exc:  # a log that cannot say how it is, is not healthy
                health = {"ok": False, "error": str(exc)}
        return EngineSnapshot(
            status=self.engine.status(),
            stats=_copy(self.engine.stats),
            events=self.events.copy(),
            verdict_log=health,
            verdict_log_enabled=self.verdict_log_health is not None,
        )

    def read(self) -> EngineSnapshot:
        """``snapshot`` taken on the engine's loop, from any thread (module doc)."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or loop.is_closed():
            return self.snapshot()

        async def take() -> EngineSnapshot:
            return self.snapshot()

        return asyncio.run_coroutine_threadsafe(take(), loop).result(self.read_timeout_s)

    def render(self) -> bytes:
        """The text exposition of every metric (what ``GET /metrics`` answers)."""
        return generate_latest(self.registry)

    def start(self, listen: str, tls: tuple[Path, Path, Path | None] | None = None) -> MetricsEndpoint:
        """Serve ``/metrics`` on ``listen`` (HTTPS with ``tls`` = (cert, key, client CA or None));
        call on the engine's running loop."""
        self._loop = asyncio.get_running_loop()
        cert, key, ca = tls if tls is not None else (None, None, None)
        self.endpoint = MetricsEndpoint(self.registry, listen, cert_file=cert, key_file=key, client_ca_file=ca)
        self.endpoint.start()
        return self.endpoint

    def stop(self) -> None:
        if self.endpoint is not None:
            self.endpoint.stop()


def _copy(stats: Any) -> Any:
    """A copy of the stats object, so that the scrape thread never reads one being updated."""
    return copy.copy(stats)

