"""ONNX export: single file, dynamic batch, checker, parity against torch, user modules and files."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from exporter import zoo
from exporter.export import (
    OPSET,
    build_from_factory,
    check_parity,
    export_module,
    inspect_onnx,
    load_factory,
    ort_session,
)
from orchestrator.coe import ExpertSpec
from orchestrator.errors import ExportError


@pytest.mark.parametrize(("arch", "mb"), [("classifier", 1.0), ("detector", 1.0)])
def test_export_and_parity(tmp_path: Path, arch: str, mb: float) -> None:
    spec = ExpertSpec(f"{arch}_x", arch, mb, 4 if arch == "classifier" else 3, (3, 32, 32), {})
    model = zoo.build_expert(spec, coe_seed=1)
    path = tmp_path / "model.onnx"
    res = export_module(model, path, spec.input_shape, zoo.output_names(arch), name=spec.name, parity_batches=(1, 5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # weights inside, no external data
    assert res.max_abs_error is not None and res.max_abs_error < 1e-3
    assert abs(res.bytes / (mb * 2**20) - 1) < 0.15
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == OPSET
    info = res.info
    assert info.batched and [t.name for t in info.inputs] == ["image"]
    assert [t.name for t in info.outputs] == list(zoo.output_names(arch))
    assert info.inputs[0].dims == (3, 32, 32) and all(d > 0 for t in info.outputs for d in t.dims)
    # dynamic batch: a batch size never seen at export time runs and matches torch
    sess = ort_session(path)
    x = np.random.default_rng(0).random((7, 3, 32, 32), dtype=np.float32)
    got = sess.run(None, {"image": x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    for r, g in zip(refs, got, strict=True):
        assert g.shape[0] == 7 and np.allclose(r.numpy(), g, atol=1e-3, rtol=1e-3)


def test_dynamo_exporter_also_works(tmp_path: Path) -> None:
    spec = ExpertSpec("cls_d", "classifier", 0.5, 4, (3, 32, 32), {})
    res = export_module(zoo.build_expert(spec, 3), tmp_path / "d.onnx", spec.input_shape, ["logits"], exporter="dynamo")
    assert res.info.batched and res.info.outputs[0].dims == (4,)
    assert res.max_abs_error is not None and res.max_abs_error < 1e-3
    with pytest.raises(ExportError, match="unknown exporter"):
        export_module(zoo.build_expert(spec, 3), tmp_path / "e.onnx", spec.input_shape, ["logits"], exporter="tf")


class _Noisy(torch.nn.Module):
    """Exports fine but ONNX Runtime draws other random numbers than torch: parity must fail."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) + torch.rand(x.shape[0], x.shape[1])


def test_parity_failure_names_expert_and_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"noisy: parity check failed at batch \d+: max abs error"):
        export_module(_Noisy(), tmp_path / "m.onnx", (3, 8, 8), ["logits"], name="noisy")


def test_check_parity_reports_max_error(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    export_module(model, tmp_path / "m.onnx", (3, 8, 8), ["logits"], parity=False)
    err = check_parity(model, tmp_path / "m.onnx", (3, 8, 8))
    assert 0.0 <= err < 1e-4
    with torch.no_grad():
        model[0].bias += 1.0  # torch now differs from the file
    with pytest.raises(ExportError, match="parity check failed"):
        check_parity(model, tmp_path / "m.onnx", (3, 8, 8), name="m")


def test_inspect_onnx_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not found"):
        inspect_onnx(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ExportError, match="junk.onnx"):
        inspect_onnx(junk)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_inspect_unbatched_onnx(tmp_path: Path) -> None:
    model = torch.nn.Flatten(0).eval()
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(model, (torch.zeros(2, 3),), str(path), input_names=["x"], output_names=["y"], opset_version=OPSET, dynamo=False)
    info = inspect_onnx(path)
    assert not info.batched and info.inputs[0].dims == (2, 3) and info.outputs[0].dims == (6,)


@pytest.fixture
def user_pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pkg = tmp_path / "userpkg_exp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent("""
        import torch

        def tiny():
            return torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

        def not_a_module():
            return 42

        def broken():
            raise RuntimeError("no weights here")

        VALUE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "userpkg_exp.nets"
    for mod in [m for m in sys.modules if m.startswith("userpkg_exp")]:
        del sys.modules[mod]


def test_user_factory(user_pkg: str, tmp_path: Path) -> None:
    model = build_from_factory(f"{user_pkg}:tiny")
    res = export_module(model, tmp_path / "u.onnx", (3, 16, 16), ["logits"], name="user")
    assert res.info.outputs[0].dims == (5,) and res.max_abs_error is not None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "package.module:factory"),
        ("userpkg_missing.mod:f", "cannot import module 'userpkg_missing.mod'"),
        ("{pkg}:absent", "has no attribute 'absent'"),
        ("{pkg}:VALUE", "is not callable"),
        ("{pkg}:not_a_module", "not a torch.nn.Module"),
        ("{pkg}:broken", "raised RuntimeError: no weights here"),
    ],
)
def test_factory_errors(user_pkg: str, spec: str, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        if "{pkg}" in spec:
            build_from_factory(spec.format(pkg=user_pkg))
        else:
            load_factory(spec)
