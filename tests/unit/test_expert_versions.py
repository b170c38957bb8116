"""Versions of an expert in the model repository: `expert add --replace` writes a new version
beside the old one, `expert rollback` takes the newest back, numbers are never reused, and a
replacement must keep the expert's inputs and outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import repository
from exporter.build import add_expert, rollback_expert
from orchestrator import model_versions
from orchestrator.cli import main
from orchestrator.errors import ExportError
from tests.integration.factories import make_classifier_onnx


def onnx_file(tmp_path: Path, seed: int, channels: int = 8) -> Path:
    path = tmp_path / f"m{seed}_{channels}.onnx"
    path.write_bytes(make_classifier_onnx(seed=seed, channels=channels))
    return path


def manifest_entry(repo: Path, name: str) -> dict[str, object]:
    return dict(repository.read_manifest(repo)["experts"][name])


def test_replace_writes_a_new_version_and_rollback_takes_it_back(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_expert(repo, "mine", onnx_file=onnx_file(tmp_path, 0))
    assert model_versions.live_versions(repo / "mine") == [1]
    v1 = (repo / "mine" / "1" / "model.onnx").read_bytes()

    add_expert(repo, "mine", onnx_file=onnx_file(tmp_path, 1), replace=True)
    assert model_versions.live_versions(repo / "mine") == [1, 2]
    assert (repo / "mine" / "1" / "model.onnx").read_bytes() == v1  # the old version is untouched
    entry = manifest_entry(repo, "mine")
    assert entry["version"] == "2" and entry["sha256"] == repository.file_sha256(repo / "mine" / "2" / "model.onnx")

    assert rollback_expert(repo, "mine") == (2, 1)
    assert model_versions.latest_version(repo / "mine") == 1
    assert model_versions.retired_versions(repo / "mine") == [2]
    entry = manifest_entry(repo, "mine")
    assert entry["version"] == "1" and entry["sha256"] == repository.file_sha256(repo / "mine" / "1" / "model.onnx")
    # a retired version's file is still found (a verdict of it may still be logged)
    assert model_versions.model_file(repo / "mine", 2) == repo / "mine" / "retired" / "2" / "model.onnx"

    add_expert(repo, "mine", onnx_file=onnx_file(tmp_path, 2), replace=True)
    assert model_versions.live_versions(repo / "mine") == [1, 3]  # 2 is never reused for other content


def test_same_content_makes_no_new_version_and_old_versions_are_pruned(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_expert(repo, "mine", onnx_file=onnx_file(tmp_path, 0))
    add_expert(repo, "mine", onnx_file=onnx_file(tmp_path, 0), replace=True)
    assert model_versions.live_versions(repo / "mine") == [1]
    for seed in range(1, 5):
        add_expert(repo, "mine", onnx_file=onnx_file(tmp_path, seed), replace=True)
    assert model_versions.live_versions(repo / "mine") == [3, 4, 5]  # KEEP_VERSIONS newest
    assert not [p for p in (repo / "mine").iterdir() if p.name.startswith(".incoming-")]


def test_rollback_needs_an_earlier_version_and_replace_keeps_the_signature(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_expert(repo, "mine", onnx_file=onnx_file(tmp_path, 0))
    with pytest.raises(ExportError, match="only version 1.*no earlier version"):
        rollback_expert(repo, "mine")
    with pytest.raises(ExportError, match="not in the model repository"):
        rollback_expert(repo, "nobody")
    # same inputs, outputs and batching, other weights: fine; another tensor contract is not
    # (the routing would send it images it does not take)
    from onnx import helper, load_model_from_string  # deferred: onnx import is slow

    model = load_model_from_string(make_classifier_onnx(seed=3))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("scores", 1, ["batch", 4]))
    model.graph.node[-1].output[0] = "scores"
    other = tmp_path / "other.onnx"
    other.write_bytes(model.SerializeToString())
    with pytest.raises(ExportError, match="does not keep the expert's inputs and outputs.*outputs"):
        add_expert(repo, "mine", onnx_file=other, replace=True)
    assert model_versions.live_versions(repo / "mine") == [1]


def test_the_cli_says_which_version_it_added_and_rolled_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    assert main(["expert", "add", "--repo", str(repo), "--name", "mine", "--onnx", str(onnx_file(tmp_path, 0))]) == 0
    assert "added mine version 1" in capsys.readouterr().out
    assert main(["expert", "add", "--repo", str(repo), "--name", "mine", "--onnx", str(onnx_file(tmp_path, 1)), "--replace"]) == 0
    assert "added mine version 2" in capsys.readouterr().out
    assert main(["expert", "rollback", "--repo", str(repo), "--name", "mine"]) == 0
    assert "version 2 retired, version 1 is the newest again" in capsys.readouterr().out
    code = main(["expert", "rollback", "--repo", str(repo), "--name", "mine"])
    out, err = capsys.readouterr()
    assert code != 0 and "no earlier version" in err and "Traceback" not in err


def test_a_re_export_of_a_changed_definition_is_a_new_version(tmp_path: Path) -> None:
    from exporter.build import export_coe
    from orchestrator.coe import load_coe
    from tests.unit.exporter_factories import tiny_coe_yaml

    repo = tmp_path / "repo"
    for seed in (1, 2):  # another seed: other weights, the same inputs and outputs
        coe_file = tmp_path / f"coe{seed}.yaml"
        coe_file.write_text(tiny_coe_yaml("tiny", seed))
        export_coe(load_coe(coe_file), repo, jobs=1, calibrate=False, parity=False)
    for name in ("cls_t000", "det_0"):
        assert model_versions.live_versions(repo / name) == [1, 2]
        entry = manifest_entry(repo, name)
        assert entry["version"] == "2" and entry["sha256"] == repository.file_sha256(repository.model_path(repo, name))
