"""Triton's GPU memory figures, read from its Prometheus metrics endpoint.

Triton (built with GPU support, on a host with NVIDIA GPUs) publishes ``nv_gpu_memory_used_bytes``
per device, labelled by ``gpu_uuid``, on its metrics port (``--metrics-port``, default 8002,
path ``/metrics``). It reads NVML every ``--metrics-interval-ms`` (default 2000 ms), so a figure
can be that old when it is read (``TRITON_GPU_METRICS_INTERVAL_S``). The figure is the whole
device's use (every process on it, not only this server's), which is why a reader compares it
with the device's use before anything was loaded (``orchestrator.engine.gpu_memory_watch``).

A server without GPUs (the embedded CPU-only one, or a GPU server with none visible) publishes no
such metric: ``parse_gpu_memory_used`` returns ``{}`` for it.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.errors import TritonError

#: the metric Triton publishes per GPU (bytes in use on the device)
GPU_MEMORY_USED = "nv_gpu_memory_used_bytes"
#: how often Triton refreshes its GPU metrics by default (``--metrics-interval-ms=2000``)
TRITON_GPU_METRICS_INTERVAL_S = 2.0


class GpuMetricsError(TritonError):
    """The metrics endpoint could not be read, or what it sent is not Prometheus text."""


def check_metrics_url(url: str) -> None:
    """Raise ``GpuMetricsError`` unless ``url`` is an http(s) URL with a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GpuMetricsError(f"metrics URL {url!r} must be http://HOST:PORT/metrics (Triton's metrics port, 8002 by default)")


def parse_gpu_memory_used(text: str) -> dict[str, int]:
    """``gpu_uuid -> bytes in use`` from Prometheus text exposition (``{}`` when the metric is absent).
    Raises ``GpuMetricsError`` on text that is not Prometheus exposition."""
    used: dict[str, int] = {}
    try:
        for family in text_string_to_metric_families(text):
            if family.name != GPU_MEMORY_USED:
                continue
            for sample in family.samples:
                uuid = sample.labels.get("gpu_uuid", "")
                used[uuid] = used.get(uuid, 0) + int(sample.value)
    except (ValueError, OverflowError) as exc:  # OverflowError: int(+Inf)
        raise GpuMetricsError(f"not Prometheus text: {exc}") from None
    return used


def read_gpu_memory_used(url: str, timeout_s: float = 2.0) -> dict[str, int]:
    """GET ``url`` and parse it (``parse_gpu_memory_used``). Blocking: call it off the event loop.
    Raises ``GpuMetricsError`` naming the URL when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (checked scheme)
            text = response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        # HTTPException: not HTTP at all (a gRPC port given by mistake: BadStatusLine), or cut off
        raise GpuMetricsError(f"cannot read Triton's metrics at {url}: {exc!r}") from None
    try:
        return parse_gpu_memory_used(text)
    except GpuMetricsError as exc:
        raise GpuMetricsError(f"Triton's metrics at {url}: {exc}") from None
