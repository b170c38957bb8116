"""The tensor contract between the experts (ONNX / Triton) and the orchestrator.

numpy only: the orchestrator uses this to interpret Triton outputs; the exporter uses the names.

Input (every expert)
    ``image``: FP32, NCHW, dynamic batch axis, values in [0, 1] (pixel / 255, see
    ``orchestrator.images.decode_image``). Triton dims exclude the batch axis: ``[C, H, W]``.

Classifier outputs
    ``logits``: FP32 [N, num_classes]. Class 0 means "no defect"; the classifier says "no defect"
    iff class 0 has the largest logit (ties go to class 0). See ``classifier_no_defect``.

Detector outputs (YOLO-style, decoded inside the graph)
    ``boxes``: FP32 [N, A, 4] as (x1, y1, x2, y2) in input pixels (A = grid cells x anchors);
    ``objectness``: FP32 [N, A] in [0, 1] (already through the sigmoid);
    ``class_logits``: FP32 [N, A, C].

Detector pass rule (``detector_pass``)
    An image *passes* (component present, aligned and oriented: no further action) iff at least
    one predicted box has objectness >= ``threshold`` (0.5), lies fully inside the image (with a
    ``margin`` of 0 pixels by default) and has its centre within ``center_tol`` (25%) of the image
    size from the image centre on both axes. It fails otherwise ("misaligned / missing").
    The rule is a pure function of the outputs, so the same outputs always give the same verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INPUT_NAME = "image"
CLASSIFIER_OUTPUT = "logits"
DETECTOR_OUTPUTS = ("boxes", "objectness", "class_logits")
NO_DEFECT_CLASS = 0
#: the detector's grid stride in input pixels (one grid cell = 8x8 pixels)
DETECTOR_STRIDE = 8
DEFAULT_OBJECTNESS_THRESHOLD = 0.5
DEFAULT_CENTER_TOL = 0.25


def classifier_no_defect(logits: np.ndarray) -> np.ndarray:
    """Bool array [N]: True where the classifier says "no defect" (argmax == class 0).

    ``logits`` is [N, num_classes] (or [num_classes] for a single image -> shape ()).
    """
    z = np.asarray(logits)
    if z.ndim < 1 or z.shape[-1] < 2:
        raise ValueError(f"classifier logits must be [N, num_classes>=2], got shape {z.shape}")
    return np.argmax(z, axis=-1) == NO_DEFECT_CLASS


@dataclass(frozen=True)
class Detections:
    """Decoded detections of one image, sorted by descending score."""

    boxes: np.ndarray  # [K, 4] float32 (x1, y1, x2, y2) pixels
    scores: np.ndarray  # [K] objectness
    classes: np.ndarray  # [K] int64 argmax of the class logits

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def _check_detector_outputs(boxes: np.ndarray, objectness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(boxes, dtype=np.float32)
    o = np.asarray(objectness, dtype=np.float32)
    if b.ndim != 3 or b.shape[-1] != 4 or o.shape != b.shape[:2]:
        raise ValueError(f"detector outputs must be boxes [N, A, 4] and objectness [N, A], got {b.shape} and {o.shape}")
    return b, o


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of (x1, y1, x2, y2) boxes."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def decode_detections(
    boxes: np.ndarray,
    objectness: np.ndarray,
    class_logits: np.ndarray,
    threshold: float = DEFAULT_OBJECTNESS_THRESHOLD,
    iou_threshold: float | None = 0.5,
    max_detections: int = 100,
) -> list[Detections]:
    """One ``Detections`` per image: boxes with objectness >= threshold after greedy NMS.

    ``iou_threshold=None`` skips NMS. Inputs are the three detector outputs for a batch.
    """
    b, o = _check_detector_outputs(boxes, objectness)
    c = np.asarray(class_logits)
    if c.ndim != 3 or c.shape[:2] != b.shape[:2]:
        raise ValueError(f"class_logits must be [N, A, C] matching boxes {b.shape}, got {c.shape}")
    out: list[Detections] = []
    for i in range(b.shape[0]):
        keep = np.flatnonzero(o[i] >= threshold)
        keep = keep[np.argsort(-o[i, keep], kind="stable")]
        if iou_threshold is not None and keep.size > 1:
            chosen: list[int] = []
            remaining = keep
            while remaining.size and len(chosen) < max_detections:
                first = int(remaining[0])
                chosen.append(first)
                ious = box_iou(b[i, first : first + 1], b[i, remaining[1:]])[0]
                remaining = remaining[1:][ious < iou_threshold]
            keep = np.asarray(chosen, dtype=np.int64)
        keep = keep[:max_detections]
        out.append(Detections(b[i, keep], o[i, keep], np.argmax(c[i, keep], axis=-1).astype(np.int64)))
    return out


def qualifying_boxes(
    boxes: np.ndarray,
    image_hw: tuple[int, int],
    center_tol: float = DEFAULT_CENTER_TOL,
    margin: float = 0.0,
) -> np.ndarray:
    """Bool [N, A]: the box lies fully inside the image and is roughly centred (geometry only)."""
    b = np.asarray(boxes, dtype=np.float32)
    h, w = image_hw
    inside = (b[..., 0] >= -margin) & (b[..., 1] >= -margin) & (b[..., 2] <= w + margin) & (b[..., 3] <= h + margin)
    cx = (b[..., 0] + b[..., 2]) / 2
    cy = (b[..., 1] + b[..., 3]) / 2
    centred = (np.abs(cx - w / 2) <= center_tol * w) & (np.abs(cy - h / 2) <= center_tol * h)
    return inside & centred


def detector_pass(
    boxes: np.ndarray,
    objectness: np.ndarray,
    image_hw: tuple[int, int],
    threshold: float = DEFAULT_OBJECTNESS_THRESHOLD,
    center_tol: float = DEFAULT_CENTER_TOL,
    margin: float = 0.0,
) -> np.ndarray:
    """Bool [N]: the detector's verdict per image (the pass rule in the module docstring)."""
    b, o = _check_detector_outputs(boxes, objectness)
    ok = qualifying_boxes(b, image_hw, center_tol, margin) & (o >= threshold)
    return np.asarray(ok.any(axis=1))
