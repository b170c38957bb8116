"""Protobuf (``coserve.v1``) <-> the engine's domain types; pure translation and validation.

Server direction: ``prepare_request`` checks everything a request can get wrong that the proto
can express (empty request, missing fields, unknown component type, image missing, wrong dtype,
shape or byte count, oversized or undecodable image) and raises ``BadRequest`` with a message
naming the field and the problem; ``PreparedRequest.finish`` then decodes the image (PNG/JPEG via
``orchestrator.images``, to exactly ``input_shape(component_type)``, never resized) into the
``InspectRequest`` the engine takes. The split lets the servicer decode encoded images off the
event loop. ``request_from_proto`` does both at once.

Client direction: ``request_to_proto`` (a domain request, its absolute ``time.monotonic()``
deadline sent as relative milliseconds), and ``*_from_proto`` for verdicts, summaries and status.

Deadlines: ``InspectRequest.deadline_ms`` is relative to when the server receives the request;
the server turns it into an absolute monotonic deadline and takes the earlier of it and the gRPC
call's own deadline.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from orchestrator.engine.types import (
    BadRequest,
    EngineStatus,
    ExecutorStatus,
    ExpertUse,
    InspectRequest,
    Outcome,
    ResidentExpert,
    ServerStatus,
    Verdict,
)
from orchestrator.frontend import inspection_pb2 as pb
from orchestrator.frontend.board import BoardSummary
from orchestrator.images import ImageDecodeError, decode_image

#: the largest encoded (PNG/JPEG) image accepted, in bytes; a raw tensor must be exactly its
#: shape's size
MAX_ENCODED_BYTES = 16 * 1024 * 1024
#: encoded formats accepted (Pillow's format names)
ENCODED_FORMATS = ("PNG", "JPEG")
_FP32_BYTES = 4
_MAX_LISTED_TYPES = 8

_OUTCOME_TO_PB: dict[str, int] = {
    "pass": pb.OUTCOME_PASS,
    "defect": pb.OUTCOME_DEFECT,
    "fail": pb.OUTCOME_DETECTOR_FAIL,
    "error": pb.OUTCOME_ERROR,
}
_OUTCOME_FROM_PB: dict[int, Outcome] = {v: k for k, v in _OUTCOME_TO_PB.items()}  # type: ignore[misc]


class ComponentCatalog(Protocol):
    """The part of ``InspectionService`` that validation needs."""

    def component_types(self) -> Sequence[str]: ...

    def input_shape(self, component_type: str) -> tuple[int, int, int]: ...


# --- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedRequest:
    """A request whose fields and image are checked; ``finish`` decodes the image (may take ms)."""

    board_id: str
    component_id: str
    component_type: str
    shape: tuple[int, int, int]
    deadline: float | None
    tensor: np.ndarray | None  # raw input (already the final tensor)
    encoded: bytes | None  # PNG/JPEG bytes still to decode

    @property
    def needs_decoding(self) -> bool:
        return self.encoded is not None

    def finish(self) -> InspectRequest:
        """The engine's request, the image a float32 [C, H, W] array. Raises ``BadRequest`` if the
        encoded image cannot be decoded to ``shape``."""
        if self.tensor is not None:
            image = self.tensor
        else:
            assert self.encoded is not None
            try:
                image = decode_image(self.encoded, self.shape)
            except ImageDecodeError as exc:
                raise BadRequest(f"encoded: {exc}") from None
        return InspectRequest(
            board_id=self.board_id,
            component_id=self.component_id,
            component_type=self.component_type,
            image=image,
            deadline=self.deadline,
        )


def prepare_request(
    msg: pb.InspectRequest,
    catalog: ComponentCatalog,
    *,
    now: float,
    time_remaining: float | None = None,
    max_encoded_bytes: int = MAX_ENCODED_BYTES,
) -> PreparedRequest:
    """Check ``msg`` against the proto's rules and ``catalog``; raise ``BadRequest`` naming the field.

    ``now``: the server's ``time.monotonic()`` at arrival; ``time_remaining``: seconds left of the
    gRPC call deadline (None: no call deadline). The request's deadline is the earlier of
    ``now + deadline_ms / 1000`` and ``now + time_remaining``.
    """
    # ListFields, not ByteSize() == 0: the same test for a proto3 message without unknown
    # fields, but ByteSize walks the whole message (the 48 KB tensor included: ~7 us per call)
    if not msg.ListFields():
        raise BadRequest(
            "empty request: set board_id, component_id, component_type and an image (tensor or encoded)"
        )
    missing = [name for name in ("board_id", "component_id", "component_type") if not getattr(msg, name)]
    image_kind = msg.WhichOneof("image")
    if image_kind is None:
        missing.append("image (tensor or encoded)")
    if missing:
        raise BadRequest(f"missing {', '.join(missing)}")

    known = catalog.component_types()
    if msg.component_type not in known:
        listed = ", ".join(repr(t) for t in sorted(known)[:_MAX_LISTED_TYPES])
        more = f", ... ({len(known)} in all)" if len(known) > _MAX_LISTED_TYPES else ""
        raise BadRequest(
            f"component_type: unknown component type {msg.component_type!r} (known: {listed}{more})"
        )
    shape = tuple(int(d) for d in catalog.input_shape(msg.component_type))
    assert len(shape) == 3

    deadline = _deadline(msg, now, time_remaining)
    tensor = encoded = None
    if image_kind == "tensor":
        tensor = _tensor_from_proto(msg.tensor, msg.component_type, shape)
    else:
        encoded = _check_encoded(msg.encoded, msg.component_type, shape, max_encoded_bytes)
    return PreparedRequest(
        board_id=msg.board_id,
        component_id=msg.component_id,
        component_type=msg.component_type,
        shape=shape,
        deadline=deadline,
        tensor=tensor,
        encoded=encoded,
    )


def request_from_proto(
    msg: pb.InspectRequest,
    catalog: ComponentCatalog,
    *,
    now: float,
    time_remaining: float | None = None,
    max_encoded_bytes: int = MAX_ENCODED_BYTES,
) -> InspectRequest:
    """``prepare_request`` and ``finish`` in one (decodes an encoded image on this thread)."""
    return prepare_request(
        msg, catalog, now=now, time_remaining=time_remaining, max_encoded_bytes=max_encoded_bytes
    ).finish()


def _deadline(msg: pb.InspectRequest, now: float, time_remaining: float | None) -> float | None:
    candidates = []
    if msg.HasField("deadline_ms"):
        candidates.append(now + msg.deadline_ms / 1000.0)
    if time_remaining is not None:
        candidates.append(now + max(0.0, time_remaining))
    return min(candidates) if candidates else None


def _dims(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _tensor_from_proto(t: pb.Tensor, component_type: str, expected: tuple[int, int, int]) -> np.ndarray:
    if t.dtype != pb.DTYPE_FP32:
        name = pb.DType.Name(t.dtype) if t.dtype in pb.DType.values() else f"unknown value {t.dtype}"
        raise BadRequest(f"tensor.dtype is {name}; only DTYPE_FP32 (little-endian float32) is accepted")
    shape = tuple(t.shape)
    if shape != expected:
        raise BadRequest(
            f"tensor.shape is {_dims(shape)}, component type {component_type!r} needs {_dims(expected)} (C, H, W)"
        )
    need = math.prod(expected) * _FP32_BYTES
    # Read the field once: each read of a bytes field makes a new copy of it (upb), so
    # ``len(t.data)`` and then ``t.data`` again copied the image twice.
    data = t.data
    have = len(data)
    if have != need:
        problem = "is oversized" if have > need else "is too short"
        raise BadRequest(f"tensor.data {problem}: {have} bytes, shape {_dims(expected)} in FP32 needs {need}")
    # a read-only view over that one copy (frombuffer copies nothing)
    return np.frombuffer(data, dtype="<f4").reshape(expected)


def _check_encoded(data: bytes, component_type: str, expected: tuple[int, int, int], limit: int) -> bytes:
    if len(data) == 0:
        raise BadRequest("encoded is empty: send PNG or JPEG bytes")
    if len(data) > limit:
        raise BadRequest(f"encoded is oversized: {len(data)} bytes, the limit is {limit}")
    # Read only the header before decoding: a small file can claim a huge image.
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, size = img.format, img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadRequest(f"encoded: cannot decode image ({len(data)} bytes): {exc}") from None
    if fmt not in ENCODED_FORMATS:
        raise BadRequest(f"encoded is a {fmt} image; only PNG or JPEG are accepted")
    _, h, w = expected
    if size != (w, h):
        raise BadRequest(
            f"encoded image is {size[0]}x{size[1]} (WxH), component type {component_type!r} needs {w}x{h}"
        )
    return data


def request_to_proto(request: InspectRequest, *, now: float) -> pb.InspectRequest:
    """The message for ``request`` (client side). ``now``: the client's ``time.monotonic()``; an
    absolute deadline becomes the milliseconds left (rounded up, 0 if already passed).

    Raises ``BadRequest`` for an image that is neither bytes nor a float32 [C, H, W] array.
    """
    msg = pb.InspectRequest(
        board_id=request.board_id, component_id=request.component_id, component_type=request.component_type
    )
    image = request.image
    if isinstance(image, (bytes, bytearray, memoryview)):
        msg.encoded = bytes(image)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.float32 or image.ndim != 3:
            raise BadRequest(
                f"image: a raw tensor must be float32 [C, H, W], got {image.dtype} {list(image.shape)}"
                " (send encoded PNG/JPEG bytes for pixels)"
            )
        msg.tensor.dtype = pb.DTYPE_FP32
        msg.tensor.shape.extend(int(d) for d in image.shape)
        msg.tensor.data = np.ascontiguousarray(image, dtype="<f4").tobytes()
    else:
        raise BadRequest(f"image: expected bytes or a numpy array, got {type(image).__name__}")
    if request.deadline is not None:
        msg.deadline_ms = max(0, min(2**32 - 1, math.ceil((request.deadline - now) * 1000.0)))
    return msg


# --- verdicts and summaries --------------------------------------------------------------------


def verdict_to_proto(verdict: Verdict) -> pb.Verdict:
    """The message for ``verdict``. Raises ``ValueError`` for an outcome outside ``Outcome``."""
    try:
        outcome = _OUTCOME_TO_PB[verdict.outcome]
    except KeyError:
        raise ValueError(
            f"verdict outcome {verdict.outcome!r} is not one of {sorted(_OUTCOME_TO_PB)}"
        ) from None
    msg = pb.Verdict(
        board_id=verdict.board_id,
        component_id=verdict.component_id,
        component_type=verdict.component_type,
        outcome=outcome,  # type: ignore[arg-type]
        scores=[float(s) for s in verdict.scores],
        experts=[pb.ExpertUse(expert=e.expert, version=e.version) for e in verdict.experts],
        queue_s=verdict.queue_s,
        compute_s=verdict.compute_s,
        switch_s=verdict.switch_s,
    )
    if verdict.defect_class is not None:
        msg.defect_class = int(verdict.defect_class)
    if verdict.error is not None:
        msg.error = verdict.error
    return msg


def verdict_from_proto(msg: pb.Verdict) -> Verdict:
    """The domain verdict of ``msg`` (sequences as tuples). Raises ``ValueError`` for an
    unspecified or unknown outcome."""
    try:
        outcome = _OUTCOME_FROM_PB[msg.outcome]
    except KeyError:
        raise ValueError(f"verdict for component {msg.component_id!r} has outcome {msg.outcome}") from None
    return Verdict(
        board_id=msg.board_id,
        component_id=msg.component_id,
        component_type=msg.component_type,
        outcome=outcome,
        defect_class=msg.defect_class if msg.HasField("defect_class") else None,
        scores=tuple(msg.scores),
        experts=tuple(ExpertUse(expert=e.expert, version=e.version) for e in msg.experts),
        queue_s=msg.queue_s,
        compute_s=msg.compute_s,
        switch_s=msg.switch_s,
        error=msg.error if msg.HasField("error") else None,
    )


def summary_to_proto(summary: BoardSummary) -> pb.BoardSummary:
    return pb.BoardSummary(
        board_id=summary.board_id,
        components=summary.components,
        passed=summary.passed,
        defects=summary.defects,
        detector_fails=summary.detector_fails,
        errors=summary.errors,
        wall_s=summary.wall_s,
    )


def summary_from_proto(msg: pb.BoardSummary) -> BoardSummary:
    return BoardSummary(
        board_id=msg.board_id,
        components=msg.components,
        passed=msg.passed,
        defects=msg.defects,
        detector_fails=msg.detector_fails,
        errors=msg.errors,
        wall_s=msg.wall_s,
    )


# --- status ------------------------------------------------------------------------------------


def status_to_proto(status: EngineStatus) -> pb.StatusResponse:
    return pb.StatusResponse(
        policy=status.policy,
        serving=status.serving,
        servers=[
            pb.ServerStatus(
                name=s.name, url=s.url, embedded=s.embedded, healthy=s.healthy, accounting=s.accounting
            )
            for s in status.servers
        ],
        executors=[
            pb.ExecutorStatus(
                name=e.name,
                kind=e.kind,
                server=e.server,
                budget_bytes=e.budget_bytes,
                used_bytes=e.used_bytes,
                queue_depth=e.queue_depth,
                resident=[pb.ResidentExpert(expert=r.expert, bytes=r.bytes, version=r.version) for r in e.resident],
            )
            for e in status.executors
        ],
        queued=status.queued,
        queue_bound=status.queue_bound,
        notes=list(status.notes),
    )


def status_from_proto(msg: pb.StatusResponse) -> EngineStatus:
    """The domain status of ``msg`` (sequences as tuples)."""
    return EngineStatus(
        policy=msg.policy,
        serving=msg.serving,
        servers=tuple(
            ServerStatus(
                name=s.name, url=s.url, embedded=s.embedded, healthy=s.healthy, accounting=s.accounting
            )
            for s in msg.servers
        ),
        executors=tuple(
            ExecutorStatus(
                name=e.name,
                kind=e.kind,
                server=e.server,
                budget_bytes=e.budget_bytes,
                used_bytes=e.used_bytes,
                queue_depth=e.queue_depth,
                resident=tuple(
                    ResidentExpert(expert=r.expert, bytes=r.bytes, version=r.version) for r in e.resident
                ),
            )
            for e in msg.executors
        ),
        queued=msg.queued,
        queue_bound=msg.queue_bound,
        notes=tuple(msg.notes),
    )
