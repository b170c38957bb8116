"""``MeteredService``: an ``InspectionService`` that counts and times what passes through it.

It wraps the service the front end talks to (the engine, or the verdict log's wrapper of it) and
delegates every call unchanged; ``inspect`` is observed:

- ``coserve_requests_total{result}``: ``verdict`` (answered with a verdict), one of the refusals
  (``bad_request``, ``queue_full``, ``deadline_passed``, ``backend_unavailable``, ``not_serving``,
  ``other_refusal`` for an ``InspectionError`` outside that table), ``cancelled`` (the caller
  went away) or ``internal_error`` (any other exception: an engine bug);
- ``coserve_verdicts_total{outcome}``: ``pass``, ``defect``, ``fail``, ``error``;
- ``coserve_request_duration_seconds{outcome}`` (histogram): from the call to its verdict;
- ``coserve_verdict_queue_seconds``, ``coserve_verdict_compute_seconds``,
  ``coserve_verdict_switch_wait_seconds`` (histograms): the engine's split of each verdict's time;
- ``coserve_requests_in_flight`` (gauge): calls inside ``inspect`` now.

``prometheus_client``'s metric objects are thread-safe, so scrapes from the HTTP thread read them
while the loop updates them. The cost per request is a few lock-protected increments (~µs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from orchestrator.engine.types import (
    BackendUnavailable,
    BadRequest,
    DeadlinePassed,
    EngineStatus,
    InspectionError,
    InspectionService,
    InspectRequest,
    NotServing,
    Outcome,
    QueueFull,
    Verdict,
)

OUTCOMES: tuple[str, ...] = get_args(Outcome)
#: refusal classes -> their ``result`` label, most specific first
REFUSALS: tuple[tuple[type[InspectionError], str], ...] = (
    (BadRequest, "bad_request"),
    (QueueFull, "queue_full"),
    (DeadlinePassed, "deadline_passed"),
    (BackendUnavailable, "backend_unavailable"),
    (NotServing, "not_serving"),
)
RESULTS: tuple[str, ...] = ("verdict", *(r for _, r in REFUSALS), "other_refusal", "cancelled", "internal_error")

#: 0.5 ms .. 60 s: a cached verdict answers in well under a millisecond, a cold board's first
#: component can wait for several expert loads
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def refusal_result(error: InspectionError) -> str:
    """The ``result`` label of a refused request."""
    for cls, label in REFUSALS:
        if isinstance(error, cls):
            return label
    return "other_refusal"


class RequestMetrics:
    """The request-level metric objects, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "coserve_requests", "Inspect calls by result (verdict or refusal).", ["result"], registry=registry
        )
        self.verdicts = Counter("coserve_verdicts", "Verdicts by outcome.", ["outcome"], registry=registry)
        self.duration = Histogram(
            "coserve_request_duration_seconds", "Time from an inspect call to its verdict.", ["outcome"],
            buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.queue = Histogram(
            "coserve_verdict_queue_seconds", "Time a verdict's component waited in queues.",
            buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.compute = Histogram(
            "coserve_verdict_compute_seconds", "Time a verdict's experts computed.",
            buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.switch_wait = Histogram(
            "coserve_verdict_switch_wait_seconds", "Time a verdict's component waited for expert switches.",
            buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.in_flight = Gauge("coserve_requests_in_flight", "Inspect calls in progress.", registry=registry)
        # every label value exists from the start (at 0), so rate() and alerts see the series;
        # the children are kept: ``labels()`` costs a lock and a lookup per call
        self.by_result = {result: self.requests.labels(result) for result in RESULTS}
        self._verdicts = {outcome: self.verdicts.labels(outcome) for outcome in OUTCOMES}
        self._duration = {outcome: self.duration.labels(outcome) for outcome in OUTCOMES}

    def observe(self, verdict: Verdict, took_s: float) -> None:
        self.by_result["verdict"].inc()
        self._verdicts[verdict.outcome].inc()
        self._duration[verdict.outcome].observe(took_s)
        self.queue.observe(verdict.queue_s)
        self.compute.observe(verdict.compute_s)
        self.switch_wait.observe(verdict.switch_s)


class MeteredService:
    """``inner`` with its ``inspect`` calls counted and timed (module doc); all else delegated."""

    def __init__(self, inner: InspectionService, metrics: RequestMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def serving(self) -> bool:
        return self.inner.serving()

    def component_types(self) -> Sequence[str]:
        return self.inner.component_types()

    def input_shape(self, component_type: str) -> tuple[int, int, int]:
        return self.inner.input_shape(component_type)

    def status(self) -> EngineStatus:
        return self.inner.status()

    async def inspect(self, request: InspectRequest) -> Verdict:
        m = self.metrics
        began = time.perf_counter()
        m.in_flight.inc()
        try:
            verdict = await self.inner.inspect(request)
        except InspectionError as exc:
            m.by_result[refusal_result(exc)].inc()
            raise
        except BaseException as exc:  # CancelledError included: count it, then let it go on
            m.by_result["cancelled" if isinstance(exc, asyncio.CancelledError) else "internal_error"].inc()
            raise
        finally:
            m.in_flight.dec()
        m.observe(verdict, time.perf_counter() - began)
        return verdict

