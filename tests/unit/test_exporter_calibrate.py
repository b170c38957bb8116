"""Bias calibration: on *fresh* board-source images the rates match the CoE within 5 points."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from exporter import calibrate as cal
from exporter import zoo
from exporter.generate import PRESETS, generate
from orchestrator.board_source import BoardSource
from orchestrator.coe import CoEDefinition, parse_coe
from orchestrator.experts_io import classifier_no_defect, detector_pass

FRESH_SEED = 424242  # not the calibration's seed: an independent sample
FRESH_N = 400


def make_coe(probs: list[float], pass_prob: float | None = None) -> CoEDefinition:
    base = generate(replace(PRESETS["demo"], types=len(probs), detectors=1, detector_share=1.0, image_size=32, seed=21,
                            classifier_mb=0.5, detector_mb=1.0))
    doc = base.to_dict()
    for rule, p in zip(doc["routing"], probs, strict=True):
        rule["no_defect_prob"] = p
    if pass_prob is not None:
        for e in doc["experts"]:
            if e["arch"] == "detector":
                e["params"] = {"pass_prob": pass_prob}
    return parse_coe(doc)


@pytest.mark.parametrize("p", [0.95, 0.8, 0.5])
def test_classifier_no_defect_rate_on_fresh_sample(p: float) -> None:
    coe = make_coe([p, 0.9])
    spec = coe.experts["cls_t000"]
    model = zoo.build_expert(spec, coe.seed)
    import torch

    fresh = BoardSource(coe, seed=FRESH_SEED).sample("t000", FRESH_N, shape=spec.input_shape)
    with torch.no_grad():
        before = classifier_no_defect(model(torch.from_numpy(fresh)).numpy()).mean()
    result = cal.calibrate_expert(model, spec, coe)
    assert result.target == p and result.samples == cal.DEFAULT_SAMPLES
    assert result.achieved is not None and abs(result.achieved - p) <= 0.01
    with torch.no_grad():
        after = classifier_no_defect(model(torch.from_numpy(fresh)).numpy()).mean()
    assert abs(after - p) <= 0.05, f"fresh no-defect rate {after:.3f} vs target {p} (before calibration {before:.3f})"


def test_detector_pass_rate_on_fresh_sample_and_deterministic() -> None:
    import torch

    coe = make_coe([0.9, 0.9, 0.9], pass_prob=0.85)
    spec = coe.experts["det_0"]
    model = zoo.build_expert(spec, coe.seed)
    c = cal.calibrate_expert(model, spec, coe)
    assert c.target == 0.85
    # a fresh sample drawn like the calibration's: the detector's types in board proportions
    fresh = cal.calibration_sample(coe, spec, FRESH_N, BoardSource(coe, seed=FRESH_SEED))
    assert len(fresh) == FRESH_N
    with torch.no_grad():
        boxes, obj, _ = model(torch.from_numpy(fresh))
    verdict = detector_pass(boxes.numpy(), obj.numpy(), spec.input_shape[1:])
    assert abs(verdict.mean() - 0.85) <= 0.05
    with torch.no_grad():
        boxes2, obj2, _ = model(torch.from_numpy(fresh))
    assert np.array_equal(verdict, detector_pass(boxes2.numpy(), obj2.numpy(), spec.input_shape[1:]))


def test_solve_shift_edges() -> None:
    m = np.array([0.0, 1.0, 2.0, 3.0])
    assert np.mean(m <= cal._solve_shift(m, 0.5)) == 0.5
    assert np.mean(m <= cal._solve_shift(m, 1.0)) == 1.0
    assert np.mean(m <= cal._solve_shift(m, 0.0)) == 0.0
    # images that can never pass (+inf margin) cap the achievable rate without breaking the solve
    inf = np.array([0.0, 1.0, np.inf, np.inf])
    assert np.mean(inf <= cal._solve_shift(inf, 0.9)) == 0.5


def test_unrouted_expert_is_left_alone() -> None:
    coe = make_coe([0.9])
    doc = coe.to_dict()
    doc["experts"].append({"name": "cls_spare", "arch": "classifier", "size_mb": 0.5})
    coe = parse_coe(doc)
    model = zoo.build_expert(coe.experts["cls_spare"], coe.seed)
    c = cal.calibrate_expert(model, coe.experts["cls_spare"], coe)
    assert c.target is None and c.shift == 0.0 and float(model.fc.bias.abs().sum()) == 0.0
