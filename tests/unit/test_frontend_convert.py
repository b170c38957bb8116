"""orchestrator.frontend.convert: validation of requests (each BadRequest names its field) and the
proto <-> domain round trips. No gRPC server here."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pytest

from orchestrator.engine.types import (
    BadRequest,
    EngineStatus,
    ExecutorStatus,
    ExpertUse,
    InspectRequest,
    ResidentExpert,
    ServerStatus,
    Verdict,
)
from orchestrator.frontend import convert
from orchestrator.frontend import inspection_pb2 as pb
from orchestrator.frontend.board import BoardSummary, BoardTally
from orchestrator.images import encode_png

SHAPE = (3, 8, 6)  # C, H, W: deliberately not square


class Catalog:
    def __init__(self, types: Sequence[str] = ("cap", "res"), shape: tuple[int, int, int] = SHAPE) -> None:
        self.types = list(types)
        self.shape = shape

    def component_types(self) -> Sequence[str]:
        return self.types

    def input_shape(self, component_type: str) -> tuple[int, int, int]:
        return self.shape


def _pixels(h: int = SHAPE[1], w: int = SHAPE[2], c: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(h, w, c), dtype=np.uint8)


def _tensor_msg(
    shape: Sequence[int] = SHAPE, data: bytes | None = None, dtype: int = pb.DTYPE_FP32
) -> pb.InspectRequest:
    arr = np.linspace(0, 1, int(np.prod(shape)), dtype="<f4")
    msg = pb.InspectRequest(board_id="b1", component_id="c1", component_type="cap")
    msg.tensor.shape.extend(shape)
    msg.tensor.dtype = dtype  # type: ignore[assignment]
    msg.tensor.data = arr.tobytes() if data is None else data
    return msg


def _encoded_msg(data: bytes) -> pb.InspectRequest:
    return pb.InspectRequest(board_id="b1", component_id="c1", component_type="cap", encoded=data)


def _bad(msg: pb.InspectRequest, **kw: object) -> str:
    with pytest.raises(BadRequest) as info:
        convert.request_from_proto(msg, Catalog(), now=100.0, **kw)  # type: ignore[arg-type]
    return str(info.value)


# --- valid requests ----------------------------------------------------------------------------


def test_raw_tensor_is_taken_as_is_little_endian() -> None:
    req = convert.request_from_proto(_tensor_msg(), Catalog(), now=100.0)
    assert req.image.shape == SHAPE and req.image.dtype == np.float32  # type: ignore[union-attr]
    np.testing.assert_array_equal(
        req.image, np.linspace(0, 1, int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)
    )
    assert (req.board_id, req.component_id, req.component_type, req.deadline) == ("b1", "c1", "cap", None)


def test_png_is_decoded_to_the_input_shape() -> None:
    pixels = _pixels()
    req = convert.request_from_proto(_encoded_msg(encode_png(pixels)), Catalog(), now=0.0)
    np.testing.assert_allclose(np.asarray(req.image), pixels.transpose(2, 0, 1) / 255.0, atol=1e-7)


def test_jpeg_is_accepted() -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(buf, format="JPEG")
    req = convert.request_from_proto(_encoded_msg(buf.getvalue()), Catalog(), now=0.0)
    assert req.image.shape == SHAPE  # type: ignore[union-attr]


def test_prepare_defers_decoding() -> None:
    prepared = convert.prepare_request(_encoded_msg(encode_png(_pixels())), Catalog(), now=0.0)
    assert prepared.needs_decoding and prepared.encoded is not None
    assert not convert.prepare_request(_tensor_msg(), Catalog(), now=0.0).needs_decoding


@pytest.mark.parametrize(
    ("deadline_ms", "remaining", "expected"),
    [
        (None, None, None),
        (250, None, 100.25),
        (None, 2.0, 102.0),
        (250, 0.1, 100.1),
        (250, 5.0, 100.25),
        (0, None, 100.0),
    ],
)
def test_deadline_is_the_earlier_of_request_and_call(
    deadline_ms: int | None, remaining: float | None, expected: float | None
) -> None:
    msg = _tensor_msg()
    if deadline_ms is not None:
        msg.deadline_ms = deadline_ms
    req = convert.request_from_proto(msg, Catalog(), now=100.0, time_remaining=remaining)
    assert req.deadline == (pytest.approx(expected) if expected is not None else None)


# --- bad requests: each names the field and the problem ---------------------------------------


def test_empty_request() -> None:
    assert _bad(pb.InspectRequest()).startswith("empty request")


def test_a_request_with_any_field_present_is_not_empty() -> None:
    """Emptiness is field presence (``ListFields``), not the four required fields: a deadline of 0
    or an empty tensor is something the client sent (mutation: testing only board, component,
    type and image -> these read "empty request")."""
    only_deadline = pb.InspectRequest()
    only_deadline.deadline_ms = 0
    assert _bad(only_deadline).startswith("missing board_id")
    only_tensor = pb.InspectRequest()
    only_tensor.tensor.SetInParent()
    text = _bad(only_tensor)
    assert text.startswith("missing board_id") and "image" not in text


def test_missing_fields_are_all_named() -> None:
    msg = pb.InspectRequest(component_type="cap")
    msg.deadline_ms = 5
    text = _bad(msg)
    assert "missing" in text and "board_id" in text and "component_id" in text and "image" in text


def test_unknown_component_type_lists_known_ones() -> None:
    msg = _tensor_msg()
    msg.component_type = "diode"
    text = _bad(msg)
    assert "component_type" in text and "'diode'" in text and "'cap'" in text


@pytest.mark.parametrize(
    ("msg", "words"),
    [
        (_tensor_msg(dtype=pb.DTYPE_UNSPECIFIED), ("tensor.dtype", "DTYPE_UNSPECIFIED", "DTYPE_FP32")),
        (_tensor_msg(dtype=7), ("tensor.dtype", "unknown value 7")),
        (_tensor_msg(shape=(3, 6, 8), data=b"\0" * 576), ("tensor.shape", "[3, 6, 8]", "[3, 8, 6]")),
        (_tensor_msg(shape=(1, 3, 8, 6), data=b"\0" * 576), ("tensor.shape", "[1, 3, 8, 6]")),
        (_tensor_msg(data=b"\0" * 100), ("tensor.data", "too short", "100 bytes", "576")),
        (_tensor_msg(data=b"\0" * 10_000), ("tensor.data", "oversized", "10000 bytes", "576")),
        (_encoded_msg(b""), ("encoded", "empty")),
        (_encoded_msg(b"not an image at all"), ("encoded", "cannot decode")),
        (_encoded_msg(encode_png(_pixels(h=6, w=8))), ("encoded", "8x6", "6x8")),
    ],
    ids=[
        "dtype-unspecified",
        "dtype-unknown",
        "shape-swapped",
        "shape-batched",
        "short",
        "oversized-tensor",
        "encoded-empty",
        "undecodable",
        "wrong-size-png",
    ],
)
def test_bad_image(msg: pb.InspectRequest, words: tuple[str, ...]) -> None:
    text = _bad(msg)
    for word in words:
        assert word in text, text


def test_oversized_encoded_image_is_refused_before_decoding() -> None:
    data = encode_png(_pixels())
    text = _bad(_encoded_msg(data), max_encoded_bytes=len(data) - 1)
    assert "encoded is oversized" in text and str(len(data)) in text


def test_other_image_formats_are_refused() -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(buf, format="BMP")
    assert "BMP" in _bad(_encoded_msg(buf.getvalue()))


def test_truncated_png_is_a_bad_request() -> None:
    data = encode_png(_pixels(h=64, w=48))
    catalog = Catalog(shape=(3, 64, 48))
    with pytest.raises(BadRequest, match="encoded"):
        convert.request_from_proto(_encoded_msg(data[: len(data) // 2]), catalog, now=0.0)


# --- client direction and round trips ----------------------------------------------------------


def test_request_to_proto_round_trip_raw_and_encoded() -> None:
    image = np.random.default_rng(1).random(SHAPE, dtype=np.float32)
    req = InspectRequest("b1", "c1", "cap", image, deadline=10.5)
    msg = convert.request_to_proto(req, now=10.0)
    assert msg.deadline_ms == 500 and list(msg.tensor.shape) == list(SHAPE)
    back = convert.request_from_proto(msg, Catalog(), now=50.0)
    np.testing.assert_array_equal(back.image, image)
    assert back.deadline == pytest.approx(50.5)

    png = encode_png(_pixels())
    msg = convert.request_to_proto(InspectRequest("b1", "c1", "cap", png), now=0.0)
    assert msg.encoded == png and not msg.HasField("deadline_ms")


def test_request_to_proto_passed_deadline_is_zero_ms() -> None:
    msg = convert.request_to_proto(InspectRequest("b", "c", "cap", b"x", deadline=1.0), now=2.0)
    assert msg.HasField("deadline_ms") and msg.deadline_ms == 0


@pytest.mark.parametrize("image", [np.zeros((8, 6, 3), np.uint8), np.zeros(SHAPE, np.float64), "a path"])
def test_request_to_proto_refuses_what_it_cannot_send(image: object) -> None:
    with pytest.raises(BadRequest, match="image"):
        convert.request_to_proto(InspectRequest("b", "c", "cap", image), now=0.0)  # type: ignore[arg-type]


VERDICTS = [
    Verdict(
        "b1",
        "c1",
        "cap",
        "pass",
        scores=(0.125,),
        experts=(ExpertUse("det", "3"),),
        queue_s=0.5,
        compute_s=0.25,
    ),
    Verdict(
        "b1",
        "c2",
        "cap",
        "defect",
        defect_class=2,
        scores=(0.1, 0.2, 0.7),
        experts=(ExpertUse("det", "3"), ExpertUse("cls-cap", "1")),
        switch_s=1.5,
    ),
    Verdict("b1", "c3", "res", "fail", scores=(0.25,), experts=(ExpertUse("det", "3"),)),
    Verdict("b1", "c4", "res", "error", error="expert cls-res failed to load: out of memory"),
    Verdict(
        "b1", "c5", "res", "defect", defect_class=0
    ),  # defect_class 0 survives (presence, not truthiness)
]


@pytest.mark.parametrize("verdict", VERDICTS, ids=lambda v: v.outcome)
def test_verdict_round_trip(verdict: Verdict) -> None:
    assert convert.verdict_from_proto(convert.verdict_to_proto(verdict)) == verdict


def test_outcome_enum_names() -> None:
    names = [pb.Outcome.Name(convert.verdict_to_proto(v).outcome) for v in VERDICTS[:4]]
    assert names == ["OUTCOME_PASS", "OUTCOME_DEFECT", "OUTCOME_DETECTOR_FAIL", "OUTCOME_ERROR"]


def test_bad_outcomes_are_value_errors() -> None:
    with pytest.raises(ValueError, match="outcome"):
        convert.verdict_to_proto(Verdict("b", "c", "t", "maybe"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outcome"):
        convert.verdict_from_proto(pb.Verdict(component_id="c"))


STATUS = EngineStatus(
    policy="coserve",
    serving=True,
    servers=(
        ServerStatus("local", "127.0.0.1:8001", embedded=True, healthy=True, accounting="measured"),
        ServerStatus("far", "10.0.0.2:8001", embedded=False, healthy=False, accounting="profile"),
    ),
    executors=(
        ExecutorStatus(
            "cpu0",
            "cpu",
            "local",
            budget_bytes=8 << 30,
            used_bytes=5 << 30,
            queue_depth=3,
            resident=(ResidentExpert("det", 123_456_789, "3"), ResidentExpert("cls-cap", 42)),
        ),
        ExecutorStatus("gpu0", "gpu", "far", budget_bytes=80 << 30, used_bytes=0, queue_depth=0),
    ),
    queued=3,
    queue_bound=256,
    notes=("far: memory accounted from the profile",),
)


def test_status_round_trip() -> None:
    assert convert.status_from_proto(convert.status_to_proto(STATUS)) == STATUS
    assert convert.status_from_proto(convert.status_to_proto(EngineStatus("x", False))) == EngineStatus(
        "x", False
    )


def test_summary_round_trip_and_tally() -> None:
    tally = BoardTally()
    tally.request("b1", now=10.0)
    tally.request("b1", now=10.5)
    for i, v in enumerate(VERDICTS):
        tally.verdict(v, now=11.0 + i)
    summary = tally.summary()
    assert summary == BoardSummary(
        "b1", components=5, passed=1, defects=2, detector_fails=1, errors=1, wall_s=5.0
    )
    assert convert.summary_from_proto(convert.summary_to_proto(summary)) == summary
    assert BoardTally().summary() == BoardSummary("")
