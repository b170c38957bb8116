"""The tensor contract (classifier / detector outputs) and image decoding."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from orchestrator.errors import CoserveError
from orchestrator.experts_io import (
    classifier_no_defect,
    decode_detections,
    detector_pass,
    qualifying_boxes,
)
from orchestrator.images import ImageDecodeError, decode_image, encode_png


def test_classifier_no_defect_is_argmax_zero() -> None:
    logits = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [1.0, 1.0, 0.0]], dtype=np.float32)
    assert classifier_no_defect(logits).tolist() == [True, False, True]  # ties go to class 0
    with pytest.raises(ValueError):
        classifier_no_defect(np.zeros((2, 1)))


def _outputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # image 64x64; box 0 centred and inside, box 1 off-centre, box 2 sticks out, box 3 duplicate of 0
    boxes = np.array([[[20, 20, 44, 44], [0, 0, 10, 10], [40, 40, 70, 70], [21, 21, 45, 45]]], dtype=np.float32)
    obj = np.array([[0.9, 0.95, 0.8, 0.85]], dtype=np.float32)
    cls = np.array([[[0, 2, 1], [1, 0, 0], [0, 0, 3], [0, 1, 0]]], dtype=np.float32)
    return boxes, obj, cls


def test_decode_detections_threshold_and_nms() -> None:
    boxes, obj, cls = _outputs()
    (d,) = decode_detections(boxes, obj, cls, threshold=0.5)
    assert d.scores.tolist() == pytest.approx([0.95, 0.9, 0.8])  # box 3 suppressed by box 0
    assert d.classes.tolist() == [0, 1, 2]
    (all_,) = decode_detections(boxes, obj, cls, threshold=0.5, iou_threshold=None)
    assert len(all_) == 4
    (none,) = decode_detections(boxes, obj, cls, threshold=0.99)
    assert len(none) == 0


def test_detector_pass_rule() -> None:
    boxes, obj, _ = _outputs()
    assert qualifying_boxes(boxes, (64, 64)).tolist() == [[True, False, False, True]]
    assert detector_pass(boxes, obj, (64, 64)).tolist() == [True]
    low = obj.copy()
    low[0, [0, 3]] = 0.2  # the centred boxes lose confidence: off-centre / outside ones don't count
    assert detector_pass(boxes, low, (64, 64)).tolist() == [False]
    with pytest.raises(ValueError):
        detector_pass(boxes[0], obj, (64, 64))


def _png(w: int, h: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), color=128 if mode == "L" else (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_image_normalises() -> None:
    x = decode_image(_png(8, 6), (3, 6, 8))
    assert x.shape == (3, 6, 8) and x.dtype == np.float32
    assert x[:, 0, 0].tolist() == pytest.approx([10 / 255, 20 / 255, 30 / 255])
    # grayscale is converted to the expected channels
    assert decode_image(_png(8, 6, "L"), (3, 6, 8)).shape == (3, 6, 8)
    # JPEG decodes too
    buf = io.BytesIO()
    Image.new("RGB", (8, 6)).save(buf, format="JPEG")
    assert decode_image(buf.getvalue(), (3, 6, 8)).shape == (3, 6, 8)
    px = (np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    assert np.array_equal(decode_image(encode_png(px), (3, 4, 4)), px.transpose(2, 0, 1) / np.float32(255))


@pytest.mark.parametrize(
    ("data", "shape", "message"),
    [
        (b"not an image at all", (3, 6, 8), "cannot decode"),
        (b"", (3, 6, 8), "empty"),
        (_png(8, 6)[:30], (3, 6, 8), "cannot decode"),
        (_png(8, 6), (3, 8, 8), "expected 8x8"),
        (_png(8, 6), (2, 6, 8), "2 channels"),
    ],
)
def test_decode_image_errors(data: bytes, shape: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message) as info:
        decode_image(data, shape)
    assert isinstance(info.value, ValueError) and isinstance(info.value, CoserveError)


def _png_header_only(w: int, h: int) -> bytes:
    """A few hundred bytes that claim a ``w`` x ``h`` grayscale PNG (the pixel data is truncated)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [5_000, 12_000, 20_000])
def test_decode_image_refuses_a_claimed_huge_size_before_decoding(side: int) -> None:
    # the size is refused from the header: decoding first (the mutation) reports a truncated
    # file instead, after allocating side*side bytes; past Pillow's bomb limit (20000^2) its
    # DecompressionBombError must still become an ImageDecodeError, not escape as a bug
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no DecompressionBombWarning leaks to the log
        with pytest.raises(ImageDecodeError, match=f"{side}x{side}|far beyond the expected 32x32"):
            decode_image(_png_header_only(side, side), (1, 32, 32))
