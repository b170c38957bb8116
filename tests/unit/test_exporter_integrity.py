"""Repository integrity: ``expert add`` never overwrites an expert silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exporter import repository
from exporter.build import add_expert
from orchestrator.cli import main
from orchestrator.errors import ExportError

TINY_COE = '''
name: integrity_tiny
seed: 3
image: {channels: 3, height: 32, width: 32}
experts:
  - {name: cls_t000, arch: classifier, size_mb: 0.5}
  - {name: det_0, arch: detector, size_mb: 0.6}
routing:
  - {component_type: t000, classifier: cls_t000, no_defect_prob: 0.9, detector: det_0}
board: {name: b, mix: {t000: 5}}
'''


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def user_onnx(path: Path, seed: int = 0) -> Path:
    """A small valid single-file ONNX model (a 64x64 MatMul, 16 KB of weights, dynamic batch)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["image", "w"], ["logits"])],
        "user",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 64])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def coe_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_COE)
    return p


# -- 2. expert add refuses to overwrite ------------------------------------------------------


def test_add_refuses_existing_expert_unless_replace(tmp_path: Path, coe_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    code, _, _ = run(capsys, "export", "--coe", str(coe_file), "--out", str(repo), "--jobs", "1")
    assert code == 0
    mp = repository.model_path(repo, "cls_t000")
    before = mp.read_bytes()
    src = user_onnx(tmp_path / "mine.onnx")
    code, _, err = run(capsys, "expert", "add", "--repo", str(repo), "--name", "cls_t000", "--onnx", str(src))
    assert code == 2 and "Traceback" not in err
    assert "cls_t000" in err and str(repo / "cls_t000") in err and "--replace" in err
    assert mp.read_bytes() == before
    code, out, _ = run(capsys, "expert", "add", "--repo", str(repo), "--name", "cls_t000", "--onnx", str(src), "--replace")
    assert code == 0 and "added cls_t000" in out
    assert mp.read_bytes() == src.read_bytes()


def test_add_refuses_a_second_user_expert_of_the_same_name(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_expert(repo, "mine", onnx_file=user_onnx(tmp_path / "a.onnx", seed=1))
    with pytest.raises(ExportError, match=r"'mine' already exists .*--replace"):
        add_expert(repo, "mine", onnx_file=user_onnx(tmp_path / "b.onnx", seed=2))
    assert repository.model_path(repo, "mine").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    add_expert(repo, "mine", onnx_file=tmp_path / "b.onnx", replace=True)
    assert repository.model_path(repo, "mine").read_bytes() == (tmp_path / "b.onnx").read_bytes()
