"""Prometheus metrics of a running service (``coserve serve``'s ``metrics: {listen: HOST:PORT}``).

- ``collector``: the engine's state and counters, read at scrape time (the table of names);
- ``service``: ``MeteredService``, the request counts and latency histograms;
- ``endpoint``: the HTTP ``/metrics`` endpoint;
- ``service_metrics``: ``ServiceMetrics``, the three put together for one service.

Names follow Prometheus conventions: ``coserve_`` prefix, base units (seconds, bytes), ``_total``
counters. ``deploy/prometheus.yml`` scrapes this endpoint and Triton's own metrics port.
"""

from orchestrator.metrics.collector import EngineCollector, EngineSnapshot, ExpertEvents
from orchestrator.metrics.endpoint import MetricsEndpoint
from orchestrator.metrics.service import MeteredService, RequestMetrics
from orchestrator.metrics.service_metrics import ServiceMetrics

__all__ = [
    "EngineCollector",
    "EngineSnapshot",
    "ExpertEvents",
    "MeteredService",
    "MetricsEndpoint",
    "RequestMetrics",
    "ServiceMetrics",
]
