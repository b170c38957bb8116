"""The Prometheus metrics (``orchestrator.metrics``): the real engine on the fake backend, scraped.

Each scrape must agree with the engine itself (its ``status()`` and ``EngineStats``) and with
the verdicts the callers got; the HTTP endpoint is scraped for real over loopback; the engine is
read on its own event loop (never from the scrape thread); names follow Prometheus conventions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.config_reader import ConfigError
from orchestrator.engine.engine import EngineStats
from orchestrator.engine.types import (
    BadRequest,
    EngineStatus,
    ExecutorStatus,
    InspectRequest,
    QueueFull,
    ResidentExpert,
    ServerStatus,
    Verdict,
)
from orchestrator.errors import CoserveError
from orchestrator.metrics import (
    EngineCollector,
    EngineSnapshot,
    MeteredService,
    RequestMetrics,
    ServiceMetrics,
)
from orchestrator.metrics.endpoint import MetricsEndpoint
from orchestrator.serve_file import parse_serve_file
from tests.unit.engine.test_engine import config, make_engine, request
from tests.unit.engine.virtual_time import run_virtual
from tests.unit.stub_service import StubService

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str | bytes) -> tuple[Samples, dict[str, str]]:
    """(sample (name, labels) -> value, family name -> type) of an exposition."""
    if isinstance(text, bytes):
        text = text.decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def test_a_scrape_agrees_with_the_engine_and_the_verdicts() -> None:
    # 25 MB for 10 MB classifiers and a 20 MB detector: six types must switch experts
    engine, backend = make_engine(config(budget_mb=25))
    metrics = ServiceMetrics(engine, process_metrics=False)
    service = metrics.wrap(engine)
    types = [f"t{i % 6}" for i in range(18)]

    async def drive() -> tuple[list[Verdict], int, bytes, EngineStatus]:
        await engine.start()
        placed = engine.stats.loads
        verdicts = []
        for i, t in enumerate(types):  # one at a time: each type's expert must come in
            verdicts.append(await service.inspect(request(t, 0.9 if i % 4 == 0 else 0.1, cid=str(i))))
        with pytest.raises(BadRequest):
            await service.inspect(request("no_such_type", cid="bad"))
        held = sorted({e for _, e in engine.loaded_versions})
        backend.disk_versions.update({e: "2" for e in held})  # a new version of each held expert
        engine.check_versions(await backend.latest_versions(held))
        await asyncio.sleep(1.0)  # the idle copies' unloads finish
        verdicts.append(await service.inspect(request(types[0], cid="after")))  # loads one again
        return verdicts, placed, metrics.render(), engine.status()

    verdicts, placed, text, status = run_virtual(drive())
    s, _ = parse(text)
    assert value(s, "coserve_requests_total", result="verdict") == len(verdicts)
    assert value(s, "coserve_requests_total", result="bad_request") == 1
    assert value(s, "coserve_requests_total", result="queue_full") == 0  # present from the start
    for outcome in ("pass", "defect", "fail", "error"):
        n = sum(1 for v in verdicts if v.outcome == outcome)
        assert value(s, "coserve_verdicts_total", outcome=outcome) == n
        assert value(s, "coserve_request_duration_seconds_count", outcome=outcome) == n
    assert value(s, "coserve_verdict_compute_seconds_count") == len(verdicts)
    assert value(s, "coserve_verdict_compute_seconds_sum") == pytest.approx(sum(v.compute_s for v in verdicts))
    assert value(s, "coserve_expert_loads_total", executor="cpu0") == engine.stats.loads
    assert value(s, "coserve_expert_unloads_total", executor="cpu0") == engine.stats.unloads
    assert value(s, "coserve_expert_switches_total", executor="cpu0") == engine.stats.loads - placed > 0
    assert value(s, "coserve_batches_total") == engine.stats.batches
    assert value(s, "coserve_expert_version_swaps_total") == engine.stats.version_swaps > 0
    assert value(s, "coserve_expert_load_seconds_total") == pytest.approx(engine.stats.load_s)
    [ex] = status.executors
    labels = {"executor": "cpu0", "kind": "cpu", "server": ex.server}
    assert value(s, "coserve_executor_resident_bytes", **labels) == ex.used_bytes > 0
    assert value(s, "coserve_executor_budget_bytes", **labels) == ex.budget_bytes
    assert value(s, "coserve_executor_resident_experts", executor="cpu0") == len(ex.resident)
    assert value(s, "coserve_queued_requests") == 0
    assert value(s, "coserve_queue_bound") == engine.queue_bound
    assert value(s, "coserve_serving") == 1
    assert value(s, "coserve_info", policy="coserve") == 1
    assert value(s, "coserve_watchdog_recoveries_total") == getattr(engine.stats, "recoveries", 0)
    assert value(s, "coserve_verdict_log_enabled") == 0
    assert value(s, "coserve_requests_in_flight") == 0
    assert backend.violations == []


def test_queue_depth_is_read_while_work_waits() -> None:
    engine, _ = make_engine(config(budget_mb=25))
    metrics = ServiceMetrics(engine, process_metrics=False)
    service = metrics.wrap(engine)

    async def drive() -> tuple[bytes, int]:
        await engine.start()
        tasks = [asyncio.ensure_future(service.inspect(request(f"t{i % 6}", cid=str(i)))) for i in range(9)]
        await asyncio.sleep(0)
        text, queued = metrics.render(), len(tasks)
        await asyncio.gather(*tasks)
        return text, queued

    text, queued = run_virtual(drive())
    s, _ = parse(text)
    assert value(s, "coserve_queued_requests") == queued
    assert value(s, "coserve_requests_in_flight") == queued
    assert value(s, "coserve_executor_queue_depth", executor="cpu0") > 0


class ThreadRecordingEngine:
    """Just what ``ServiceMetrics`` reads, recording the thread ``status()`` runs on."""

    def __init__(self) -> None:
        self.stats = EngineStats(loads=3, reloads=1)
        self.listeners: list[Any] = []
        self.threads: list[int] = []

    def serving(self) -> bool:
        return True

    def status(self) -> EngineStatus:
        self.threads.append(threading.get_ident())
        return EngineStatus(
            policy="coserve", serving=True, queued=2, queue_bound=10,
            servers=[ServerStatus("local0", "127.0.0.1:8001", True, True)],
            executors=[ExecutorStatus("cpu0", "cpu", "local0", 100, 40, 1, (ResidentExpert("e", 40),))],
        )


def scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def test_the_endpoint_is_scraped_over_http_and_the_engine_is_read_on_its_loop() -> None:
    engine = ThreadRecordingEngine()
    metrics = ServiceMetrics(engine)

    async def body() -> tuple[str, str, int, str]:
        endpoint = metrics.start("127.0.0.1:0")
        try:
            ctype, text = await asyncio.to_thread(scrape, endpoint.url)
        finally:
            metrics.stop()
        return ctype, text, threading.get_ident(), endpoint.url

    ctype, text, loop_thread, url = asyncio.run(body())
    assert ctype.startswith("text/plain")
    s, _ = parse(text)
    assert value(s, "coserve_executor_resident_bytes", executor="cpu0", kind="cpu", server="local0") == 40
    assert value(s, "coserve_server_up", server="local0", url="127.0.0.1:8001", embedded="true") == 1
    assert value(s, "coserve_model_reloads_total") == 1
    assert value(s, "coserve_metrics_snapshot_ok") == 1
    assert total(s, "process_resident_memory_bytes") > 0  # the process's own metrics are there too
    assert engine.threads == [loop_thread]  # read on the loop, not on the scrape thread
    with pytest.raises(OSError):  # stopped: the port is closed
        scrape(url)


def test_a_blocked_loop_makes_the_scrape_say_so_instead_of_hanging() -> None:
    engine = ThreadRecordingEngine()
    metrics = ServiceMetrics(engine, read_timeout_s=0.2, process_metrics=False)

    async def body() -> str:
        endpoint = metrics.start("127.0.0.1:0")
        try:
            result: list[str] = []
            t = threading.Thread(target=lambda: result.append(scrape(endpoint.url)[1]))
            t.start()
            t.join(timeout=5)  # blocks the loop: the snapshot cannot be taken
            return result[0]
        finally:
            metrics.stop()

    s, _ = parse(asyncio.run(body()))
    assert value(s, "coserve_metrics_snapshot_ok") == 0
    assert value(s, "coserve_requests_total", result="verdict") == 0  # the rest still answers


@dataclasses.dataclass
class LogHealth:
    ok: bool
    bytes: int
    records: int
    error: str | None = None


@pytest.mark.parametrize(
    ("health", "healthy", "gauges"),
    [
        (lambda: LogHealth(True, 4096, 12), 1, {"coserve_verdict_log_bytes": 4096, "coserve_verdict_log_records": 12}),
        (lambda: LogHealth(False, 4096, 12, "disk full"), 0, {"coserve_verdict_log_bytes": 4096}),
        (lambda: {"healthy": False, "free_bytes": 0}, 0, {"coserve_verdict_log_free_bytes": 0}),
        (lambda: True, 1, {}),
        (lambda: 1 / 0, 0, {}),  # a log that cannot say how it is, is not healthy
    ],
)
def test_verdict_log_health_is_exposed(health: Any, healthy: int, gauges: dict[str, float]) -> None:
    metrics = ServiceMetrics(ThreadRecordingEngine(), verdict_log_health=health, process_metrics=False)
    s, _ = parse(metrics.render())
    assert value(s, "coserve_verdict_log_enabled") == 1
    assert value(s, "coserve_verdict_log_healthy") == healthy
    for name, v in gauges.items():
        assert value(s, name) == v


def test_the_verdict_logs_own_health_becomes_typed_metrics() -> None:
    from orchestrator.verdicts.store import LogHealth as StoreHealth

    health = StoreHealth(
        ok=False, path="/x/verdicts.sqlite", state="full", reason="database or disk is full", records=7,
        bytes_on_disk=8192, max_bytes=None, max_age_s=3600.0, verdicts_written=9, commits=3, write_failures=2,
        pruned=1, pending=4, last_commit_unix=1.7e9, failing_since_unix=None,
    )
    s, types = parse(ServiceMetrics(ThreadRecordingEngine(), verdict_log_health=lambda: health,
                                    process_metrics=False).render())
    assert value(s, "coserve_verdict_log_healthy") == 0
    assert value(s, "coserve_verdict_log_state", state="full") == 1
    assert value(s, "coserve_verdict_log_records") == 7
    assert value(s, "coserve_verdict_log_size_bytes") == 8192
    assert value(s, "coserve_verdict_log_max_age_seconds") == 3600
    assert value(s, "coserve_verdict_log_pending_verdicts") == 4
    assert value(s, "coserve_verdict_log_last_commit_timestamp_seconds") == 1.7e9
    for name, n in (("verdicts_written", 9), ("commits", 3), ("write_failures", 2), ("pruned_records", 1)):
        assert types[f"coserve_verdict_log_{name}"] == "counter"
        assert value(s, f"coserve_verdict_log_{name}_total") == n
    # None: not set (no size limit, not failing), so no series
    assert "coserve_verdict_log_max_bytes" not in types
    assert "coserve_verdict_log_failing_since_timestamp_seconds" not in types


@pytest.mark.parametrize(
    ("recoveries", "expected"),
    [(None, {(): 0}), (4, {(): 4}), ({"reload": 2, "restart": 1}, {(("kind", "reload"),): 2, (("kind", "restart"),): 1})],
)
def test_watchdog_recoveries(recoveries: Any, expected: dict[tuple[tuple[str, str], ...], float]) -> None:
    engine = ThreadRecordingEngine()
    engine.stats = dataclasses.replace(engine.stats)
    if recoveries is not None:
        engine.stats.recoveries = recoveries  # type: ignore[attr-defined]
    else:
        engine.stats = type("OldStats", (), {"loads": 1})()  # an engine without the counter
    s, _ = parse(ServiceMetrics(engine, process_metrics=False).render())
    got = {tuple(sorted(lab)): v for (n, lab), v in s.items() if n == "coserve_watchdog_recoveries_total"}
    assert got == expected


def test_an_engine_that_cannot_be_read_still_gives_a_valid_scrape() -> None:
    def read() -> EngineSnapshot:
        raise RuntimeError("engine gone")

    registry = CollectorRegistry()
    registry.register(EngineCollector(read))
    s, _ = parse(generate_latest(registry))
    assert s == {("coserve_metrics_snapshot_ok", frozenset()): 0}


class Inner(StubService):
    """An ``InspectionService`` whose inspect does what the component id says."""

    async def inspect(self, request: InspectRequest) -> Verdict:
        if request.component_id == "hang":
            await asyncio.sleep(3600)
        if request.component_id == "full":
            raise QueueFull("full")
        if request.component_id == "bug":
            raise RuntimeError("engine bug")
        return Verdict(request.board_id, request.component_id, "t", "error", error="expert failed")


def test_metered_service_counts_refusals_cancellations_and_bugs() -> None:
    registry = CollectorRegistry()
    svc = MeteredService(Inner(), RequestMetrics(registry))

    def req(cid: str) -> InspectRequest:
        return InspectRequest("b", cid, "t", b"")

    async def body() -> None:
        assert (await svc.inspect(req("ok"))).outcome == "error"
        with pytest.raises(QueueFull):
            await svc.inspect(req("full"))
        with pytest.raises(RuntimeError):
            await svc.inspect(req("bug"))
        task = asyncio.ensure_future(svc.inspect(req("hang")))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(body())
    s, _ = parse(generate_latest(registry))
    assert value(s, "coserve_requests_total", result="verdict") == 1
    assert value(s, "coserve_verdicts_total", outcome="error") == 1
    assert value(s, "coserve_requests_total", result="queue_full") == 1
    assert value(s, "coserve_requests_total", result="internal_error") == 1
    assert value(s, "coserve_requests_total", result="cancelled") == 1
    assert value(s, "coserve_requests_in_flight") == 0
    assert svc.component_types() == ["t"] and svc.input_shape("t") == (1, 1, 1) and svc.serving()


def test_names_follow_prometheus_conventions() -> None:
    engine, _ = make_engine(config(budget_mb=25))
    metrics = ServiceMetrics(engine, verdict_log_health=lambda: {"ok": True, "bytes": 1})

    async def drive() -> bytes:
        await engine.start()
        await metrics.wrap(engine).inspect(request("t0"))
        return metrics.render()

    s, types = parse(run_virtual(drive()))
    ours = {n: t for n, t in types.items() if n.startswith("coserve_")}
    assert len(ours) >= 30
    assert all(n.startswith(("coserve_", "process_", "python_")) for n in types)
    for name, kind in ours.items():
        # base units only (seconds, bytes), never milli- or kilo-anything
        assert not any(bad in name for bad in ("_ms", "millis", "_kb", "_mb", "_minutes")), name
        if kind == "counter":  # the text format names a counter's sample <name>_total
            assert any(n == name + "_total" for n, _ in s), name
    counters = {n for n, t in ours.items() if t == "counter"}
    assert {"coserve_requests", "coserve_verdicts", "coserve_expert_loads", "coserve_expert_unloads",
            "coserve_expert_switches", "coserve_watchdog_recoveries"} <= counters
    assert types["coserve_request_duration_seconds"] == "histogram"


def test_a_taken_port_is_an_error_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CoserveError, match=f"metrics: cannot listen on 127.0.0.1:{port}"):
            MetricsEndpoint(CollectorRegistry(), f"127.0.0.1:{port}").start()


def serve_data(**extra: Any) -> dict[str, Any]:
    return {"coe": "coe.yaml", "repo": "repo", "executors": [{"name": "cpu0", "kind": "cpu", "budget_bytes": 1e8}],
            **extra}


def test_the_serve_config_names_the_metrics_address(tmp_path: Path) -> None:
    spec = parse_serve_file(serve_data(metrics={"listen": "0.0.0.0:9464"}), "serve.yaml", tmp_path)
    assert spec.metrics_listen == "0.0.0.0:9464"
    assert parse_serve_file(serve_data(), "serve.yaml", tmp_path).metrics_listen is None
    for bad, words in (({"listen": "9464"}, "metrics.listen: must be HOST:PORT"),
                       ({"listen": "h:99999"}, "metrics.listen: must be HOST:PORT"),
                       ({}, "metrics.listen: is required"),
                       ({"listen": "h:1", "port": 2}, "metrics.port: unknown field")):
        with pytest.raises(ConfigError, match=words) as err:
            parse_serve_file(serve_data(metrics=bad), "serve.yaml", tmp_path)
        assert "serve.yaml" in str(err.value)
