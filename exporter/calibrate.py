"""Bias calibration: seeded weights that route like the CoE says.

Random weights say "no defect" at some arbitrary rate. Routing to detectors only behaves like the
real mix if each classifier says "no defect" on its component types' images at the rate the CoE
states (``RoutingRule.no_defect_prob``), so we shift one bias:

* Classifier: with logits ``z`` (before the shift) an image is "no defect" iff
  ``z0 + s >= max_{k>=1} zk``, i.e. iff its margin ``m = max_{k>=1} zk - z0 <= s``. The rate is
  monotone in ``s``; we set ``s`` to the target quantile of ``m`` over a sample of the board
  source's images (midway between neighbouring order statistics, so the sample rate is exactly
  ``round(p * n) / n``) and add it to ``fc.bias[0]``. A fresh sample then lands within a few points
  (binomial noise: sd ~1.6 points at n = 512 and p = 0.85).
* Detector: an image passes (``orchestrator.experts_io.detector_pass``) iff some geometrically
  qualifying box (inside, centred) has objectness >= 0.5, i.e. objectness logit >= 0. Box geometry
  does not depend on the objectness bias, so with ``score`` = the best qualifying box's logit, an
  image passes iff ``score + s >= 0``: the same quantile solve, with the shift added to every
  anchor's objectness bias. The target is ``params.pass_prob`` (default ``DEFAULT_PASS_PROB``).

A classifier serving several types is calibrated on a sample drawn from those types in proportion
to their board counts, against the count-weighted mean of their probabilities (one bias cannot
match different rates per type; the CoE generator gives each classifier one type).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.board_source import BoardSource
from orchestrator.coe import CoEDefinition, ExpertSpec
from orchestrator.experts_io import DEFAULT_CENTER_TOL, qualifying_boxes

#: the board source seed calibration samples come from (tests evaluate on other seeds)
CALIBRATION_SEED = 1_000_003
#: calibration sample size. The sample rate is exact, so the error on fresh images is binomial
#: noise of the quantile estimate: sd ~ sqrt(p(1-p)/n), 1.6 points at n = 512, p = 0.85 (2.2 at
#: 256). 512 costs ~1.4 s for a 2 MB classifier on one core; experts above BIG_MODEL_BYTES use
#: BIG_MODEL_SAMPLES because one forward pass of a ResNet101-sized expert costs ~100x more.
DEFAULT_SAMPLES = 512
BIG_MODEL_BYTES = 32 * 2**20
BIG_MODEL_SAMPLES = 256
DEFAULT_PASS_PROB = 0.9


@dataclass(frozen=True)
class Calibration:
    """What calibration did to one expert."""

    name: str
    target: float | None  # None: no routing rule uses this expert (left uncalibrated)
    achieved: float | None  # rate on the calibration sample after the shift
    shift: float
    samples: int


def _solve_shift(margins: np.ndarray, p: float) -> float:
    """Smallest-change ``s`` with mean(margins <= s) == round(p * n) / n (margins may hold +inf)."""
    m = np.sort(margins.astype(np.float64))
    n = m.size
    k = int(round(p * n))
    finite = m[np.isfinite(m)]
    spread = float(finite.max() - finite.min()) if finite.size else 1.0
    pad = max(1.0, spread)
    if k <= 0:
        return float(finite.min() - pad) if finite.size else 0.0
    if not np.isfinite(m[k - 1]):  # fewer than k images can ever pass: take all that can
        return float(finite.max() + pad) if finite.size else 0.0
    if k >= n or not np.isfinite(m[k]):
        return float(m[k - 1] + pad)
    return float((m[k - 1] + m[k]) / 2)


def _types_for(coe: CoEDefinition, expert: str, arch: str) -> list[tuple[str, float, int]]:
    """(component type, probability, board count) for every rule using ``expert``."""
    out = []
    for rule in coe.routing.values():
        if (arch == "classifier" and rule.classifier == expert) or (arch == "detector" and rule.detector == expert):
            out.append((rule.component_type, rule.no_defect_prob, coe.board.mix.get(rule.component_type, 0)))
    return out


def _sample(source: BoardSource, types: Sequence[tuple[str, float, int]], n: int, shape: tuple[int, int, int]) -> np.ndarray:
    """n images split over the types by board count (largest remainder; every type >= 1 if n allows)."""
    weights = np.array([max(c, 0) for _, _, c in types], dtype=np.float64)
    if weights.sum() <= 0:
        weights = np.ones(len(types))
    quota = weights / weights.sum() * n
    counts = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    parts = [source.sample(t, int(k), shape=shape) for (t, _, _), k in zip(types, counts, strict=True) if k > 0]
    return np.concatenate(parts) if parts else np.empty((0, *shape), dtype=np.float32)


def calibration_sample(coe: CoEDefinition, spec: ExpertSpec, n: int, source: BoardSource | None = None) -> np.ndarray:
    """The images an expert is calibrated on: ``n`` images of the types routed to it, split by
    board count (pass another ``source`` seed for an independent sample to evaluate on)."""
    types = _types_for(coe, spec.name, spec.arch)
    if not types:
        return np.empty((0, *spec.input_shape), dtype=np.float32)
    return _sample(source or BoardSource(coe, seed=CALIBRATION_SEED), types, n, spec.input_shape)


def _weighted_target(types: Sequence[tuple[str, float, int]]) -> float:
    w = np.array([max(c, 0) for _, _, c in types], dtype=np.float64)
    p = np.array([q for _, q, _ in types])
    return float(p.mean() if w.sum() <= 0 else (p * w).sum() / w.sum())


def _forward_batches(fn, x: np.ndarray, batch: int = 64) -> list:  # type: ignore[no-untyped-def]
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(fn(torch.from_numpy(x[i : i + batch])))
    return outs


def classifier_margins(model, images: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``max_{k>=1} z_k - z_0`` per image (float64 [N])."""
    logits = np.concatenate([o.numpy() for o in _forward_batches(model, images)]).astype(np.float64)
    return logits[:, 1:].max(axis=1) - logits[:, 0]


def detector_scores(model, images: np.ndarray, center_tol: float = DEFAULT_CENTER_TOL) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Best objectness *logit* among geometrically qualifying boxes per image (-inf if none)."""
    h, w = images.shape[2], images.shape[3]
    scores = []
    for raw in _forward_batches(model.raw, images):
        boxes = model.decode(raw)[0]
        # raw [N, A, 5 + C, gh, gw] -> objectness logits in the same (anchor, y, x) order as boxes
        obj = raw[:, :, 4].reshape(raw.shape[0], -1).numpy().astype(np.float64)
        ok = qualifying_boxes(boxes.numpy(), (h, w), center_tol)
        scores.append(np.where(ok, obj, -np.inf).max(axis=1))
    return np.concatenate(scores)


def calibrate_expert(
    model,  # type: ignore[no-untyped-def]
    spec: ExpertSpec,
    coe: CoEDefinition,
    samples: int | None = None,
    source: BoardSource | None = None,
) -> Calibration:
    """Shift the expert's bias in place (see the module docstring); returns what was done.

    ``samples`` defaults to ``DEFAULT_SAMPLES`` (``BIG_MODEL_SAMPLES`` for big experts).
    """
    import torch

    if samples is None:
        n_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        samples = BIG_MODEL_SAMPLES if n_bytes > BIG_MODEL_BYTES else DEFAULT_SAMPLES

    source = source or BoardSource(coe, seed=CALIBRATION_SEED)
    types = _types_for(coe, spec.name, spec.arch)
    if not types:
        return Calibration(spec.name, None, None, 0.0, 0)
    images = calibration_sample(coe, spec, samples, source)
    if spec.arch == "classifier":
        target = _weighted_target(types)
        margins = classifier_margins(model, images)
        shift = _solve_shift(margins, target)
        with torch.no_grad():
            model.fc.bias[0] += shift
        achieved = float(np.mean(margins <= shift))
    else:
        target = float(spec.params.get("pass_prob", DEFAULT_PASS_PROB))
        scores = detector_scores(model, images)
        # pass iff score + s >= 0  <=>  -score <= s: the same solve on negated scores
        shift = _solve_shift(-scores, target)
        with torch.no_grad():
            stride = 5 + model.num_classes
            for a in range(model.num_anchors):
                model.head.bias[a * stride + 4] += shift
        achieved = float(np.mean(scores + shift >= 0))
    return Calibration(spec.name, target, achieved, float(shift), int(len(images)))
