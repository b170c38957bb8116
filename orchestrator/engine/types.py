"""Domain types between the factory front end and the engine (pure: no grpc, no tritonclient).

The front end translates protobuf into these and back (``orchestrator.frontend``); the engine
implements ``InspectionService``. Errors are ``InspectionError`` subclasses, each of which the
front end maps to one gRPC status code:

=========================  ====================  ==============================================
error                      gRPC status           when
=========================  ====================  ==============================================
BadRequest                 INVALID_ARGUMENT      unknown component type, undecodable, wrongly
                                                 sized or oversized image, empty request
QueueFull                  RESOURCE_EXHAUSTED    the bounded queue is full (nothing was queued)
DeadlinePassed             DEADLINE_EXCEEDED     the request's deadline passed before a verdict
BackendUnavailable         UNAVAILABLE           no Triton server can be reached
NotServing                 UNAVAILABLE           the service is starting or draining
=========================  ====================  ==============================================

An expert that fails to load or infer is *not* an exception: the component's ``Verdict`` has
outcome ``error`` and says why (the front end answers ``Inspect`` with INTERNAL carrying it, and
streams it as a verdict in ``InspectBoard``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from orchestrator.errors import CoserveError

Outcome = Literal["pass", "defect", "fail", "error"]


@dataclass(frozen=True)
class InspectRequest:
    """One component image to inspect.

    ``image`` is either a decoded FP32 CHW tensor (raw tensor input) or encoded PNG/JPEG bytes;
    the engine decodes bytes to its expert's input shape (``orchestrator.images``).
    ``deadline`` is an absolute ``time.monotonic()`` value, or None for no deadline.
    """

    board_id: str
    component_id: str
    component_type: str
    image: np.ndarray | bytes
    deadline: float | None = None


@dataclass(frozen=True)
class ExpertUse:
    """An expert that ran for a verdict, with the version of its model file."""

    expert: str
    version: str


@dataclass(frozen=True)
class Verdict:
    """The outcome for one component.

    ``outcome``: ``pass``; ``defect`` (the classifier found defect class ``defect_class`` >= 1);
    ``fail`` (the shared detector rejected it); ``error`` (not inspected: ``error`` says why).
    ``scores``: the deciding expert's scores (classifier class probabilities, or the detector's
    best objectness). Times in seconds: waiting in queues, computing, and waiting for expert
    switches (loads/unloads) on its behalf.
    """

    board_id: str
    component_id: str
    component_type: str
    outcome: Outcome
    defect_class: int | None = None
    scores: Sequence[float] = ()
    experts: Sequence[ExpertUse] = ()
    queue_s: float = 0.0
    compute_s: float = 0.0
    switch_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class ResidentExpert:
    expert: str
    bytes: int
    version: str = ""  # the repository version it runs (``Engine.version_of``)


@dataclass(frozen=True)
class ExecutorStatus:
    name: str
    kind: str  # "cpu" | "gpu"
    server: str
    budget_bytes: int
    used_bytes: int
    queue_depth: int
    resident: Sequence[ResidentExpert] = ()


@dataclass(frozen=True)
class ServerStatus:
    name: str
    url: str
    embedded: bool
    healthy: bool
    #: how memory is accounted: "measured" (model processes seen), "profile" (external server) or
    #: "profile+gpu-metrics" (external, its GPU executor corrected by Triton's GPU metrics)
    accounting: str = "measured"


@dataclass(frozen=True)
class EngineStatus:
    policy: str
    serving: bool
    servers: Sequence[ServerStatus] = ()
    executors: Sequence[ExecutorStatus] = ()
    queued: int = 0
    queue_bound: int = 0
    notes: Sequence[str] = field(default_factory=tuple)


class InspectionError(CoserveError):
    """A request the service refuses or cannot finish; the subclass names the gRPC status."""


class BadRequest(InspectionError):
    """The request itself is wrong (unknown type, bad image, empty)."""


class QueueFull(InspectionError):
    """The bounded queue is full; nothing was queued."""


class DeadlinePassed(InspectionError):
    """The deadline passed before a verdict."""


class BackendUnavailable(InspectionError):
    """No Triton server can be reached."""


class NotServing(InspectionError):
    """The service is starting (initial placement not loaded) or draining."""


class InspectionService(Protocol):
    """What the front end needs from the engine.

    ``inspect`` returns one verdict per accepted request, or raises an ``InspectionError``
    (nothing was accepted then, or the deadline passed). Cancelling the awaiting task (a client
    that went away) withdraws the request: no queued work and no pins are left behind.
    """

    def serving(self) -> bool: ...

    def component_types(self) -> Sequence[str]: ...

    def input_shape(self, component_type: str) -> tuple[int, int, int]: ...

    async def inspect(self, request: InspectRequest) -> Verdict: ...

    def status(self) -> EngineStatus: ...
