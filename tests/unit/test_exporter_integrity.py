"""Repository integrity: ``expert add`` never overwrites an expert silently, and reuse verifies
each model.onnx's content (sha256 in the manifest), not only its size."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from exporter import repository
from exporter.build import add_expert, export_coe
from orchestrator.cli import main
from orchestrator.coe import load_coe
from orchestrator.errors import ExportError
from tests.unit import exporter_factories
from tests.unit.exporter_factories import tiny_coe_yaml

TINY_COE = tiny_coe_yaml("integrity_tiny", 3)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def zero_middle(path: Path, n: int = 4096) -> None:
    """Zero ``n`` bytes in the middle of ``path`` (same size, different content)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid - n // 2: mid + n // 2] = bytes(n)
    path.write_bytes(bytes(data))


def zero_weights(path: Path, n: int = 4096) -> None:
    """Zero ``n`` bytes in the middle of the largest initializer: still a valid model that loads
    and runs, same size -- the corruption only a content hash sees."""
    import onnx

    raw = max((t.raw_data for t in onnx.load(str(path)).graph.initializer), key=len)
    assert len(raw) > 2 * n
    data = bytearray(path.read_bytes())
    start = data.find(raw) + len(raw) // 2 - n // 2
    data[start: start + n] = bytes(n)
    path.write_bytes(bytes(data))
    onnx.checker.check_model(onnx.load(str(path)))


def user_onnx(path: Path, seed: int = 0) -> Path:
    """A small valid single-file ONNX model (a 64x64 MatMul, 16 KB of weights, dynamic batch)."""
    return exporter_factories.user_onnx(path, np.random.default_rng(seed).standard_normal((64, 64)))


@pytest.fixture
def coe_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_COE)
    return p


# -- 1. reuse verifies the content hash ------------------------------------------------------


def test_manifest_records_content_hash(tmp_path: Path, coe_file: Path) -> None:
    repo = tmp_path / "repo"
    summary = export_coe(load_coe(coe_file), repo, jobs=1)
    manifest = json.loads((repo / repository.MANIFEST).read_text())
    for name in ("cls_t000", "det_0"):
        assert manifest["experts"][name]["sha256"] == sha256(repository.model_path(repo, name))
    assert {r.name: r.sha256 for r in summary.experts} == {n: e["sha256"] for n, e in manifest["experts"].items()}


@pytest.mark.parametrize("corrupt", [zero_weights, zero_middle])
def test_corrupted_model_same_size_is_reexported(
    tmp_path: Path, coe_file: Path, capsys: pytest.CaptureFixture[str], corrupt: Callable[[Path], None]
) -> None:
    """Zeroing 4 KB keeps the size: only the content hash tells the file changed (in the weights
    the file was reused silently with its old parity figure; elsewhere the export stopped on an
    unreadable model)."""
    repo = tmp_path / "repo"
    code, _, _ = run(capsys, "export", "--coe", str(coe_file), "--out", str(repo), "--jobs", "1")
    assert code == 0
    mp = repository.model_path(repo, "cls_t000")
    good, size = mp.read_bytes(), mp.stat().st_size
    corrupt(mp)
    assert mp.stat().st_size == size and mp.read_bytes() != good
    code, out, _ = run(capsys, "export", "--coe", str(coe_file), "--out", str(repo), "--jobs", "1")
    assert code == 0
    assert "exported 1 expert(s), reused 1 unchanged" in out
    assert "re-exported: file content changed" in out and "cls_t000" in out
    assert mp.read_bytes() == good  # the seeded export is reproducible: the original file is back
    # and a third run trusts it again
    code, out, _ = run(capsys, "export", "--coe", str(coe_file), "--out", str(repo), "--jobs", "1")
    assert "exported 0 expert(s), reused 2 unchanged" in out and "re-exported" not in out


def test_old_manifest_without_hash_is_reexported(tmp_path: Path, coe_file: Path) -> None:
    repo = tmp_path / "repo"
    coe = load_coe(coe_file)
    export_coe(coe, repo, jobs=1)
    path = repo / repository.MANIFEST
    doc = json.loads(path.read_text())
    for entry in doc["experts"].values():
        del entry["sha256"]
    path.write_text(json.dumps(doc))
    summary = export_coe(coe, repo, jobs=1)
    assert summary.exported == 2 and all(not r.reused for r in summary.experts)
    assert {r.reason for r in summary.experts} == {"no content hash in the manifest"}
    doc = json.loads(path.read_text())
    assert all(e["sha256"] == sha256(repository.model_path(repo, n)) for n, e in doc["experts"].items())


def test_changed_user_expert_is_an_error_naming_file_and_fix(tmp_path: Path, coe_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user's .onnx cannot be re-exported: a changed file stops the export, naming the fixes."""
    repo = tmp_path / "repo"
    add_expert(repo, "mine", onnx_file=user_onnx(tmp_path / "mine.onnx"))
    mp = repository.model_path(repo, "mine")
    zero_middle(mp)
    code, _, err = run(capsys, "export", "--coe", str(coe_file), "--out", str(repo), "--jobs", "1")
    assert code == 2 and "Traceback" not in err
    assert str(mp) in err and "--force" in err and "expert add --replace" in err
    assert not repository.model_path(repo, "cls_t000").exists()  # refused before any work
    # --force accepts the file as it is now
    code, out, _ = run(capsys, "export", "--coe", str(coe_file), "--out", str(repo), "--jobs", "1", "--force")
    assert code == 0 and "mine" in out
    manifest = json.loads((repo / repository.MANIFEST).read_text())
    assert manifest["experts"]["mine"]["sha256"] == sha256(mp)
    code, _, _ = run(capsys, "export", "--coe", str(coe_file), "--out", str(repo), "--jobs", "1")
    assert code == 0


def test_user_expert_hash_recorded_by_add(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    src = user_onnx(tmp_path / "mine.onnx")
    rep = add_expert(repo, "mine", onnx_file=src)
    manifest = json.loads((repo / repository.MANIFEST).read_text())
    assert rep.sha256 == manifest["experts"]["mine"]["sha256"] == sha256(src)


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
    # --replace installs a new version, but only a drop-in one: this file takes other inputs
    # (a successful replacement: test_add_refuses_a_second_user_expert_of_the_same_name and
    # tests/unit/test_expert_versions.py)
    code, _, err = run(capsys, "expert", "add", "--repo", str(repo), "--name", "cls_t000", "--onnx", str(src), "--replace")
    assert code == 2 and "does not keep the expert's inputs and outputs" in err and "Traceback" not in err
    assert repository.model_path(repo, "cls_t000") == mp and mp.read_bytes() == before


def test_add_refuses_a_second_user_expert_of_the_same_name(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_expert(repo, "mine", onnx_file=user_onnx(tmp_path / "a.onnx", seed=1))
    with pytest.raises(ExportError, match=r"'mine' already exists .*--replace"):
        add_expert(repo, "mine", onnx_file=user_onnx(tmp_path / "b.onnx", seed=2))
    assert repository.model_path(repo, "mine").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    add_expert(repo, "mine", onnx_file=tmp_path / "b.onnx", replace=True)
    assert repository.model_path(repo, "mine").read_bytes() == (tmp_path / "b.onnx").read_bytes()
