"""Every file the exporter writes into a model repository is world-readable (0644, directories
0755) whatever the umask: a Triton running as another user (a container) must read it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from exporter import repository
from exporter.build import add_expert, export_coe
from orchestrator.coe import load_coe
from tests.unit import exporter_factories
from tests.unit.exporter_factories import tiny_coe_yaml

TINY_COE = tiny_coe_yaml("modes_tiny", 3)


def user_onnx(path: Path) -> Path:
    """A small valid single-file ONNX model (MatMul, dynamic batch)."""
    return exporter_factories.user_onnx(path, np.ones((8, 4), np.float32))


@pytest.fixture
def coe_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_COE)
    return p


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """A user whose umask keeps everything private: the repository must still be world-readable."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _check_modes(repo: Path) -> None:
    files = [p for p in repo.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.pbtxt", "model.onnx", repository.MANIFEST}
    for p in files:
        assert _mode(p) == 0o644, f"{p} is {oct(_mode(p))}"
    for d in [repo, *(p for p in repo.rglob("*") if p.is_dir())]:
        assert _mode(d) == 0o755, f"{d} is {oct(_mode(d))}"


@pytest.mark.usefixtures("strict_umask")
def test_exported_files_are_world_readable(tmp_path: Path, coe_file: Path) -> None:
    repo = tmp_path / "repo"
    export_coe(load_coe(coe_file), repo, jobs=1)
    assert (repo / repository.COE_FILE).is_file()
    _check_modes(repo)
    export_coe(load_coe(coe_file), repo, "onnxruntime", jobs=1)  # reuse rewrites the configs
    _check_modes(repo)


@pytest.mark.usefixtures("strict_umask")
def test_reuse_opens_up_a_private_repository(tmp_path: Path, coe_file: Path) -> None:
    """A repository written before this fix (0600 files, 0700 model dirs) is repaired on reuse."""
    repo = tmp_path / "repo"
    export_coe(load_coe(coe_file), repo, jobs=1)
    for name in ("cls_t000", "det_0"):
        os.chmod(repository.model_path(repo, name), 0o600)
        os.chmod(repo / name / "config.pbtxt", 0o600)
        os.chmod(repo / name / "1", 0o700)
        os.chmod(repo / name, 0o700)
    summary = export_coe(load_coe(coe_file), repo, jobs=1)
    assert summary.exported == 0
    _check_modes(repo)


@pytest.mark.usefixtures("strict_umask")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_added_files_are_world_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    add_expert(repo, "mine", onnx_file=user_onnx(tmp_path / "mine.onnx"))
    pkg = tmp_path / "pkgs" / "addpkg_modes"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("import torch\ndef f():\n    return torch.nn.Flatten()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    add_expert(repo, "flat", module="addpkg_modes:f", input_shape=(3, 8, 8))
    _check_modes(repo)


def test_default_umask_config_is_world_readable(tmp_path: Path, coe_file: Path) -> None:
    """The 0600 came from the temp file, not from the umask: it shows with the usual 022 too."""
    old = os.umask(0o022)
    try:
        repo = tmp_path / "repo"
        export_coe(load_coe(coe_file), repo, jobs=1)
    finally:
        os.umask(old)
    for name in ("cls_t000", "det_0"):
        assert _mode(repo / name / "config.pbtxt") == 0o644
    assert _mode(repo / repository.MANIFEST) == 0o644 and _mode(repo / repository.COE_FILE) == 0o644
    assert yaml.safe_load((repo / repository.COE_FILE).read_text())["name"] == "modes_tiny"
