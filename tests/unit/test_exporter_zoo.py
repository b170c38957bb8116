"""Expert zoo: sizes within 10% of the request (counted without exporting), seeded weights."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from exporter import zoo
from orchestrator.coe import ExpertSpec


def _spec(arch: str, mb: float, params: dict | None = None, shape=(3, 64, 64)) -> ExpertSpec:  # type: ignore[no-untyped-def,type-arg]
    return ExpertSpec("e", arch, mb, 4 if arch == "classifier" else 3, shape, params or {})


def _state_floats(spec: ExpertSpec) -> int:
    p = zoo.resolve_params(spec)
    with torch.device("meta"):  # no memory, no init: counts what the real model would hold
        c, h, w = spec.input_shape
        model = (
            zoo.Classifier(c, spec.num_classes, p.width, p.depth)
            if spec.arch == "classifier"
            else zoo.Detector(c, spec.num_classes, p.width, p.depth, p.anchors, (h, w))
        )
    return sum(t.numel() for t in model.state_dict().values() if t.dtype.is_floating_point)


@pytest.mark.parametrize("arch", ["classifier", "detector"])
@pytest.mark.parametrize("mb", [1, 2, 8, 10, 50, 179, 200])
def test_sizes_within_ten_percent(arch: str, mb: float) -> None:
    spec = _spec(arch, mb)
    floats = _state_floats(spec)
    assert floats * 4 == zoo.weight_bytes(spec)  # the analytic count is exact
    assert abs(floats * 4 / (mb * zoo.MB) - 1) <= 0.10


def test_big_models_are_resnet_like() -> None:
    p = zoo.resolve_params(_spec("classifier", 179))
    assert sum(p.depth) >= 16  # a deep residual net, not one giant layer


def test_params_override_sizing() -> None:
    p = zoo.resolve_params(_spec("classifier", 50, {"width": 8, "depth": [1, 1, 1, 1]}))
    assert (p.width, p.depth) == (8, (1, 1, 1, 1))
    d = zoo.resolve_params(_spec("detector", 4, {"anchors": 2, "pass_prob": 0.8}))
    assert d.anchors == 2
    with pytest.raises(Exception, match="unknown zoo parameter"):
        zoo.resolve_params(_spec("classifier", 2, {"heads": 3}))


def test_forward_shapes_follow_the_contract() -> None:
    cls = zoo.build_expert(_spec("classifier", 1, shape=(3, 32, 48)), coe_seed=1)
    assert cls(torch.rand(2, 3, 32, 48)).shape == (2, 4)
    det = zoo.build_expert(_spec("detector", 1, shape=(3, 32, 48)), coe_seed=1)
    boxes, obj, logits = det(torch.rand(2, 3, 32, 48))
    cells = 3 * (32 // 8) * (48 // 8)
    assert boxes.shape == (2, cells, 4) and obj.shape == (2, cells) and logits.shape == (2, cells, 3)
    assert float(obj.min()) >= 0 and float(obj.max()) <= 1


def test_logits_depend_on_the_input() -> None:
    """Random deep nets must not collapse to a constant output (calibration needs spread)."""
    cls = zoo.build_expert(_spec("classifier", 10), coe_seed=2)
    with torch.no_grad():
        z = cls(torch.rand(16, 3, 64, 64))
    margin = z[:, 1:].max(dim=1).values - z[:, 0]
    assert bool(torch.isfinite(z).all()) and float(margin.std()) > 1e-3


def _checksum_code(name: str) -> str:
    return (
        "import torch\n"
        "from exporter import zoo\n"
        "from orchestrator.coe import ExpertSpec\n"
        f"m = zoo.build_expert(ExpertSpec({name!r}, 'classifier', 1.0, 4, (3, 32, 32), {{}}), coe_seed=7)\n"
        "print(repr(sum(float(t.double().sum()) for t in m.state_dict().values())))\n"
    )


def test_weights_are_seeded_and_stable_across_processes() -> None:
    spec = ExpertSpec("cls_x", "classifier", 1.0, 4, (3, 32, 32), {})
    a, b = zoo.build_expert(spec, coe_seed=7), zoo.build_expert(spec, coe_seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    c = zoo.build_expert(spec, coe_seed=8)
    assert not torch.equal(a.fc.weight, c.fc.weight)
    other = zoo.build_expert(ExpertSpec("cls_y", "classifier", 1.0, 4, (3, 32, 32), {}), coe_seed=7)
    assert not torch.equal(a.fc.weight, other.fc.weight)
    here = repr(sum(float(t.double().sum()) for t in a.state_dict().values()))
    out = subprocess.run([sys.executable, "-c", _checksum_code("cls_x")], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "999", "PATH": ""})
    assert out.stdout.strip() == here
