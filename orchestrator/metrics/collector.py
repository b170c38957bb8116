"""The engine's state as Prometheus metrics, read at scrape time (no copy kept between scrapes).

``EngineCollector(read)`` is a ``prometheus_client`` custom collector: each scrape calls
``read()`` once for an ``EngineSnapshot`` (taken on the engine's event loop: see
``orchestrator.metrics.service_metrics``) and turns it into metric families. Nothing is counted
here: the counters are the engine's own (``EngineStats``) and ``ExpertEvents``' (a listener of
the engine's confirmed loads and unloads), so a scrape can never disagree with ``status()``.

Families (Prometheus conventions: ``coserve_`` prefix, base units, ``_total`` counters):

=========================================  ======  ==================================================
name                                       type    labels / meaning
=========================================  ======  ==================================================
coserve_serving                            gauge   1 while health checks report SERVING
coserve_info                               gauge   ``policy``; always 1
coserve_queued_requests                    gauge   components accepted and not yet answered
coserve_queue_bound                        gauge   the most that may be queued (QueueFull beyond)
coserve_executor_queue_depth               gauge   ``executor``: steps queued on it
coserve_executor_resident_bytes            gauge   ``executor, kind, server``: bytes the experts use
coserve_executor_budget_bytes              gauge   ``executor, kind, server``: the experts' budget
coserve_executor_resident_experts          gauge   ``executor``: experts loaded
coserve_server_up                          gauge   ``server, url, embedded``: 1 while it answers
coserve_expert_loads_total                 counter ``executor``: loads the backend confirmed
coserve_expert_unloads_total               counter ``executor``: unloads the backend confirmed
coserve_expert_switches_total              counter ``executor``: loads while serving (after the
                                                   initial placement): the switches the scheduler
                                                   tries to avoid
coserve_expert_load_failures_total         counter loads that failed
coserve_expert_unload_failures_total       counter unloads that failed (memory still counted)
coserve_expert_load_seconds_total          counter time spent loading
coserve_expert_unload_seconds_total        counter time spent unloading
coserve_batches_total                      counter batches run
coserve_compute_seconds_total              counter time spent in batches
coserve_model_reloads_total                counter models reloaded because their process died
coserve_watchdog_recoveries_total          counter ``kind`` where the engine names kinds:
                                                   recoveries by the watchdog (``EngineStats
                                                   .recoveries``: an int, or kind -> int)
coserve_watchdog_server_restarts_total     counter servers restarted (``EngineStats.restarts``)
coserve_watchdog_restore_loads_total       counter experts put back after a restart
coserve_watchdog_retries_total             counter operations tried again after a recovery
coserve_expert_version_swaps_total         counter held experts replaced by a new version on disk
coserve_verdict_log_enabled                gauge   1 if a verdict log is configured
coserve_verdict_log_healthy                gauge   1 while the log accepts records (0: full disk,
                                                   unwritable; the service refuses new work then)
coserve_verdict_log_state                  gauge   ``state``: ok, full, unwritable, closed; always 1
coserve_verdict_log_records                gauge   verdicts in the log
coserve_verdict_log_size_bytes             gauge   database + WAL on disk (``_max_bytes``,
                                                   ``_max_age_seconds``: the retention limits)
coserve_verdict_log_verdicts_written_total counter verdicts committed (also ``_commits_total``,
                                                   ``_write_failures_total``,
                                                   ``_pruned_records_total``)
coserve_verdict_log_last_commit_timestamp_seconds  gauge  (and ``_failing_since_...``): Unix times
coserve_verdict_log_<field>                gauge   any other numeric field of the log's health
coserve_metrics_snapshot_ok                gauge   0 if the engine could not be read this scrape
=========================================  ======  ==================================================
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.engine.types import EngineStatus

log = logging.getLogger(__name__)

PREFIX = "coserve_"


@dataclass
class ExpertEvents:
    """Per-executor counts of confirmed loads, unloads and switches.

    Register ``on_event`` as an engine listener (``engine.listeners.append(events.on_event)``);
    ``serving`` tells whether the engine's initial placement is done (a load after it is a
    switch). Runs on the engine's loop, returns at once, never raises (the listener contract).
    """

    serving: Callable[[], bool] = lambda: True
    loads: dict[str, int] = field(default_factory=dict)
    unloads: dict[str, int] = field(default_factory=dict)
    switches: dict[str, int] = field(default_factory=dict)
    _served: bool = False

    def on_event(self, event: str, executor: str, expert: str) -> None:
        if event == "load":
            self.loads[executor] = self.loads.get(executor, 0) + 1
            # once served, every later load swaps an expert in (draining included)
            self._served = self._served or _safe_bool(self.serving)
            if self._served:
                self.switches[executor] = self.switches.get(executor, 0) + 1
        elif event == "unload":
            self.unloads[executor] = self.unloads.get(executor, 0) + 1

    def copy(self) -> ExpertEvents:
        return ExpertEvents(self.serving, dict(self.loads), dict(self.unloads), dict(self.switches), self._served)


def _safe_bool(fn: Callable[[], bool]) -> bool:
    try:
        return bool(fn())
    except Exception:  # a listener must not raise
        return False


@dataclass(frozen=True)
class EngineSnapshot:
    """What one scrape reads, all taken at one instant on the engine's loop.

    ``stats``: the engine's ``EngineStats`` (any object with its counter attributes: missing
    ones are left out). ``verdict_log``: the verdict log's ``health()`` result, None when no log is
    configured (any object: ``ok``/``healthy`` is read as the health, numeric fields as gauges).
    """

    status: EngineStatus
    stats: Any = None
    events: ExpertEvents | None = None
    verdict_log: Any = None
    verdict_log_enabled: bool = False


#: EngineStats attribute -> (metric name without prefix, help)
_STATS_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("load_failures", "expert_load_failures", "Expert loads that failed."),
    ("unload_failures", "expert_unload_failures", "Expert unloads that failed (their memory stays counted)."),
    ("load_s", "expert_load_seconds", "Time spent loading experts."),
    ("unload_s", "expert_unload_seconds", "Time spent unloading experts."),
    ("batches", "batches", "Batches run on the experts."),
    ("compute_s", "compute_seconds", "Time spent running batches."),
    ("reloads", "model_reloads", "Experts reloaded because their model process died."),
    ("restarts", "watchdog_server_restarts", "Triton servers the watchdog restarted."),
    ("restore_loads", "watchdog_restore_loads", "Experts put back after a server restart."),
    ("retries", "watchdog_retries", "Operations (batch, load, unload) tried again after a recovery."),
    ("version_swaps", "expert_version_swaps", "Held experts unloaded because another version is now on disk."),
)


class EngineCollector(Collector):
    """Yields the engine's metric families from ``read()`` at each scrape (module doc)."""

    def __init__(self, read: Callable[[], EngineSnapshot]) -> None:
        self._read = read

    def describe(self) -> list[Metric]:
        # empty: the registry then does not call collect() at registration (which would read
        # the engine from whatever thread registers it)
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            snap = self._read()
        except Exception as exc:  # a scrape must answer even if the engine cannot be read
            log.warning("metrics: cannot read the engine: %s", exc)
            yield _gauge("metrics_snapshot_ok", "1 if the engine was read for this scrape.", 0)
            return
        yield _gauge("metrics_snapshot_ok", "1 if the engine was read for this scrape.", 1)
        yield from _status_families(snap.status)
        if snap.events is not None:
            yield from _event_families(snap.events, [e.name for e in snap.status.executors])
        if snap.stats is not None:
            yield from _stats_families(snap.stats)
        yield from _verdict_log_families(snap)


def _gauge(name: str, doc: str, value: float, labels: Mapping[str, str] | None = None) -> GaugeMetricFamily:
    if labels is None:
        return GaugeMetricFamily(PREFIX + name, doc, value=value)
    g = GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))
    g.add_metric(list(labels.values()), value)
    return g


def _status_families(st: EngineStatus) -> Iterator[Metric]:
    yield _gauge("serving", "1 while the service reports SERVING.", 1 if st.serving else 0)
    yield _gauge("info", "The service's policy.", 1, {"policy": st.policy})
    yield _gauge("queued_requests", "Components accepted and not yet answered.", st.queued)
    yield _gauge("queue_bound", "The most components that may be queued.", st.queue_bound)
    execs = ["executor", "kind", "server"]
    depth = GaugeMetricFamily(PREFIX + "executor_queue_depth", "Steps queued on the executor.", labels=["executor"])
    used = GaugeMetricFamily(PREFIX + "executor_resident_bytes", "Bytes the executor's resident experts use.", labels=execs)
    budget = GaugeMetricFamily(PREFIX + "executor_budget_bytes", "The executor's memory budget for experts.", labels=execs)
    count = GaugeMetricFamily(PREFIX + "executor_resident_experts", "Experts loaded on the executor.", labels=["executor"])
    for ex in st.executors:
        depth.add_metric([ex.name], ex.queue_depth)
        used.add_metric([ex.name, ex.kind, ex.server], ex.used_bytes)
        budget.add_metric([ex.name, ex.kind, ex.server], ex.budget_bytes)
        count.add_metric([ex.name], len(ex.resident))
    yield from (depth, used, budget, count)
    up = GaugeMetricFamily(PREFIX + "server_up", "1 while the Triton server answers.", labels=["server", "url", "embedded"])
    for s in st.servers:
        up.add_metric([s.name, s.url, "true" if s.embedded else "false"], 1 if s.healthy else 0)
    yield up


def _event_families(ev: ExpertEvents, executors: list[str]) -> Iterator[Metric]:
    names = sorted(set(executors) | set(ev.loads) | set(ev.unloads))
    for attr, name, doc in (
        ("loads", "expert_loads", "Expert loads the backend confirmed."),
        ("unloads", "expert_unloads", "Expert unloads the backend confirmed."),
        ("switches", "expert_switches", "Expert loads while serving (after the initial placement)."),
    ):
        counts: dict[str, int] = getattr(ev, attr)
        c = CounterMetricFamily(PREFIX + name, doc, labels=["executor"])
        for ex in names:
            c.add_metric([ex], counts.get(ex, 0))
        yield c


def _stats_families(stats: Any) -> Iterator[Metric]:
    for attr, name, doc in _STATS_COUNTERS:
        value = getattr(stats, attr, None)
        if isinstance(value, int | float):
            yield CounterMetricFamily(PREFIX + name, doc, value=value)
    recoveries = getattr(stats, "recoveries", None)
    doc = "Recoveries by the watchdog (a model reloaded, a server restarted)."
    if isinstance(recoveries, Mapping):
        c = CounterMetricFamily(PREFIX + "watchdog_recoveries", doc, labels=["kind"])
        for kind, n in sorted(recoveries.items()):
            c.add_metric([str(kind)], n)
        yield c
    else:
        # 0 until the engine keeps the counter: the series exists for dashboards and alerts
        yield CounterMetricFamily(PREFIX + "watchdog_recoveries", doc, value=recoveries if isinstance(recoveries, int) else 0)


_FIELD = re.compile(r"[^a-zA-Z0-9_]")


def _health_fields(health: Any) -> dict[str, Any]:
    if isinstance(health, Mapping):
        return dict(health)
    if is_dataclass(health) and not isinstance(health, type):
        return {f.name: getattr(health, f.name) for f in fields(health)}
    return {k: v for k, v in vars(health).items() if not k.startswith("_")} if hasattr(health, "__dict__") else {}


def _verdict_log_families(snap: EngineSnapshot) -> Iterator[Metric]:
    yield _gauge("verdict_log_enabled", "1 if a verdict log is configured.", 1 if snap.verdict_log_enabled else 0)
    if not snap.verdict_log_enabled:
        return
    health = snap.verdict_log
    values = _health_fields(health) if health is not None else {}
    if isinstance(health, bool):
        ok = health
    else:
        ok = bool(values.get("ok", values.get("healthy", health is not None)))
    yield _gauge("verdict_log_healthy", "1 while the verdict log accepts records.", 1 if ok else 0)
    if isinstance(values.get("state"), str):
        yield _gauge("verdict_log_state", "The verdict log's state (ok, full, unwritable, closed).", 1,
                     {"state": values["state"]})
    for key, value in sorted(values.items()):
        if key in ("ok", "healthy") or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        kind, name, doc = _LOG_FIELDS.get(key, ("gauge", "verdict_log_" + _FIELD.sub("_", key), ""))
        doc = doc or f"The verdict log's {key}, as its health reports it."
        if kind == "counter":
            yield CounterMetricFamily(PREFIX + name, doc, value=value)
        else:
            yield _gauge(name, doc, value)


#: the verdict log's health fields (``orchestrator.verdicts.store.LogHealth``) -> (type, name, help);
#: any other numeric field becomes a gauge ``coserve_verdict_log_<field>``; a None field is left out
_LOG_FIELDS: dict[str, tuple[str, str, str]] = {
    "records": ("gauge", "verdict_log_records", "Verdicts in the log now."),
    "bytes_on_disk": ("gauge", "verdict_log_size_bytes", "The log's size on disk (database and WAL)."),
    "max_bytes": ("gauge", "verdict_log_max_bytes", "The size beyond which the oldest records are pruned."),
    "max_age_s": ("gauge", "verdict_log_max_age_seconds", "The age beyond which records are pruned."),
    "pending": ("gauge", "verdict_log_pending_verdicts", "Verdicts handed to the writer and not yet committed."),
    "verdicts_written": ("counter", "verdict_log_verdicts_written", "Verdicts committed to the log."),
    "commits": ("counter", "verdict_log_commits", "Group commits of the log."),
    "write_failures": ("counter", "verdict_log_write_failures", "Failed writes to the log."),
    "pruned": ("counter", "verdict_log_pruned_records", "Records pruned by retention."),
    "last_commit_unix": ("gauge", "verdict_log_last_commit_timestamp_seconds", "Unix time of the last commit."),
    "failing_since_unix": ("gauge", "verdict_log_failing_since_timestamp_seconds",
                           "Unix time since when the log cannot be written."),
}
