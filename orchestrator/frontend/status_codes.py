"""The engine's errors <-> gRPC status codes (the table in ``orchestrator.engine.types``).

Besides the status code, every refusal carries the trailing metadata ``coserve-error`` naming the
error class (``ERROR_CLASS_KEY``), so that a client can raise the same domain error the engine
raised (the two UNAVAILABLE cases are otherwise indistinguishable) without parsing messages.
An ``error`` verdict answered to ``Inspect`` is INTERNAL with the name ``EXPERT_FAILED``.
"""

from __future__ import annotations

import grpc

from orchestrator.engine.types import (
    BackendUnavailable,
    BadRequest,
    DeadlinePassed,
    InspectionError,
    NotServing,
    QueueFull,
)

#: trailing-metadata key naming the engine's error class of a refused request
ERROR_CLASS_KEY = "coserve-error"
#: trailing-metadata key carrying the serialized ``Verdict`` of an INTERNAL (expert failed) answer
VERDICT_KEY = "coserve-verdict-bin"
#: the ``coserve-error`` name of an expert failure (an ``error`` verdict, INTERNAL for ``Inspect``)
EXPERT_FAILED = "ExpertFailed"

#: each InspectionError subclass -> its gRPC status (most specific classes first)
ERROR_STATUS: dict[type[InspectionError], grpc.StatusCode] = {
    BadRequest: grpc.StatusCode.INVALID_ARGUMENT,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlinePassed: grpc.StatusCode.DEADLINE_EXCEEDED,
    BackendUnavailable: grpc.StatusCode.UNAVAILABLE,
    NotServing: grpc.StatusCode.UNAVAILABLE,
}

#: the ``coserve-error`` names a client maps back to domain errors
ERROR_CLASSES: dict[str, type[InspectionError]] = {cls.__name__: cls for cls in ERROR_STATUS}


def status_for(error: InspectionError) -> grpc.StatusCode:
    """The gRPC status of ``error``: its nearest class in ``ERROR_STATUS`` (a subclass of, say,
    ``QueueFull`` is RESOURCE_EXHAUSTED), INTERNAL for an ``InspectionError`` outside the table."""
    for cls in type(error).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return grpc.StatusCode.INTERNAL


def error_class_name(error: InspectionError) -> str:
    """The ``coserve-error`` name of ``error``: its nearest class in ``ERROR_STATUS``."""
    for cls in type(error).__mro__:
        if cls in ERROR_STATUS:
            return cls.__name__
    return type(error).__name__
