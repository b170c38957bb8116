"""Model repository: layout, complete configs for both targets that parse back, reuse, user experts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from exporter import repository
from exporter.build import add_expert, export_coe
from exporter.export import OPSET, ort_session
from exporter.generate import PRESETS, generate
from orchestrator.coe import CoEDefinition, load_coe
from orchestrator.errors import ConfigError, ExportError
from orchestrator.triton.model_config import TARGET_BACKENDS, ModelConfig


def tiny_coe() -> CoEDefinition:
    """2 classifiers + 1 detector, ~0.5-1 MB each, 32x32 images: exports in a few seconds."""
    return generate(replace(PRESETS["demo"], types=2, detectors=1, detector_share=0.5, image_size=32,
                            classifier_mb=0.5, detector_mb=1.0, components=20))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CoEDefinition, object]:
    repo = tmp_path_factory.mktemp("repo")
    coe = tiny_coe()
    seen: list[str] = []
    summary = export_coe(coe, repo, "python-ort", jobs=1, progress=lambda r: seen.append(r.name))
    assert sorted(seen) == sorted(coe.experts)
    return repo, coe, summary


def _check_complete(cfg: ModelConfig, name: str, target: str) -> None:
    assert cfg.name == name and cfg.backend == TARGET_BACKENDS[target]
    assert cfg.max_batch_size == repository.DEFAULT_MAX_BATCH and cfg.dynamic_batching
    assert [(g.kind, g.count) for g in cfg.instance_groups] == [("KIND_CPU", 1)]
    assert [t.name for t in cfg.inputs] == ["image"] and cfg.inputs[0].dims == (3, 32, 32)
    assert all(t.data_type == "TYPE_FP32" and all(d > 0 for d in t.dims) for t in cfg.inputs + cfg.outputs)


def test_layout_and_configs(exported) -> None:  # type: ignore[no-untyped-def]
    repo, coe, summary = exported
    assert (repo / "coe.yaml").is_file() and load_coe(repo / "coe.yaml") == coe
    manifest = json.loads((repo / repository.MANIFEST).read_text())
    assert set(manifest["experts"]) == set(coe.experts)
    for name, spec in coe.experts.items():
        files = sorted(p.relative_to(repo / name).as_posix() for p in (repo / name).rglob("*") if p.is_file())
        assert files == ["1/model.onnx", "config.pbtxt"]
        cfg = ModelConfig.read(repo / name)
        _check_complete(cfg, name, "python-ort")
        assert cfg.parameters == {"intra_op_threads": "1", "inter_op_threads": "1", "enable_cpu_mem_arena": "0"}
        expected = ["logits"] if spec.arch == "classifier" else ["boxes", "objectness", "class_logits"]
        assert [t.name for t in cfg.outputs] == expected
        # the config's tensors are the ONNX graph's
        sess = ort_session(repo / name / "1" / "model.onnx")
        assert [o.name for o in sess.get_outputs()] == expected
        out = sess.run(None, {"image": np.zeros((2, 3, 32, 32), np.float32)})
        assert [tuple(o.shape[1:]) for o in out] == [t.dims for t in cfg.outputs]
    assert summary.exported == len(coe.experts) and summary.max_abs_error < 1e-3
    assert all(r.calibration_target is not None for r in summary.experts)


def test_native_target_reuses_files(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, coe, _ = exported
    before = {n: (repo / n / "1" / "model.onnx").stat().st_mtime_ns for n in coe.experts}
    summary = export_coe(coe, repo, "onnxruntime", jobs=1)
    assert summary.exported == 0 and all(r.reused for r in summary.experts)
    for name in coe.experts:
        assert (repo / name / "1" / "model.onnx").stat().st_mtime_ns == before[name]
        cfg = ModelConfig.read(repo / name)
        _check_complete(cfg, name, "onnxruntime")
        assert cfg.parameters == {"intra_op_thread_count": "1", "inter_op_thread_count": "1", "enable_mem_arena": "0"}
    export_coe(coe, repo, "python-ort", jobs=1)  # leave the module fixture as it was


def test_changed_rule_reexports_only_that_expert(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, coe, _ = exported
    doc = coe.to_dict()
    doc["routing"][0]["no_defect_prob"] = 0.5
    from orchestrator.coe import parse_coe

    changed = parse_coe(doc)
    summary = export_coe(changed, repo, "python-ort", jobs=1, only=[doc["routing"][0]["classifier"], "det_0"])
    exported_names = {r.name for r in summary.experts if not r.reused}
    assert exported_names == {doc["routing"][0]["classifier"]} | ({"det_0"} if doc["routing"][0].get("detector") else set())
    export_coe(coe, repo, "python-ort", jobs=1)


def test_bad_target_and_only(tmp_path: Path) -> None:
    coe = tiny_coe()
    with pytest.raises(ConfigError, match="unknown target 'tensorrt'"):
        export_coe(coe, tmp_path / "r", "tensorrt")
    with pytest.raises(ConfigError, match="unknown expert.*nope"):
        export_coe(coe, tmp_path / "r", only=["nope"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        export_coe(coe, tmp_path / "file")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_add_existing_onnx_and_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    src = tmp_path / "mine.onnx"
    torch.onnx.export(model, (torch.zeros(2, 3, 16, 16),), str(src), input_names=["pixels"], output_names=["scores"],
                      opset_version=OPSET, dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}}, dynamo=False)
    repo = tmp_path / "repo"
    rep = add_expert(repo, "mine", onnx_file=src, target="onnxruntime")
    cfg = ModelConfig.read(repo / "mine")
    assert cfg.backend == "onnxruntime" and rep.max_abs_error is None
    assert [(t.name, t.dims) for t in cfg.inputs] == [("pixels", (3, 16, 16))]
    assert [(t.name, t.dims) for t in cfg.outputs] == [("scores", (2,))]
    assert (repo / "mine" / "1" / "model.onnx").read_bytes() == src.read_bytes()

    pkg = tmp_path / "pkgs" / "addpkg_repo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import torch\n"
        "def det():\n"
        "    class D(torch.nn.Module):\n"
        "        def forward(self, image):\n"
        "            m = image.mean(dim=(2, 3))\n"
        "            return m.repeat(1, 4).reshape(-1, 3, 4), m, m.reshape(-1, 3, 1)\n"
        "    return D()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    rep = add_expert(repo, "mydet", module="addpkg_repo:det", input_shape=(3, 8, 8))
    cfg = ModelConfig.read(repo / "mydet")
    assert [t.name for t in cfg.outputs] == ["boxes", "objectness", "class_logits"]
    assert rep.max_abs_error is not None and rep.max_abs_error < 1e-5
    manifest = json.loads((repo / repository.MANIFEST).read_text())
    assert set(manifest["experts"]) == {"mine", "mydet"}
    with pytest.raises(ExportError, match="2 names were given"):
        add_expert(repo, "mydet2", module="addpkg_repo:det", input_shape=(3, 8, 8), output_names=["a", "b"])
    with pytest.raises(ConfigError, match="letters, digits"):
        add_expert(repo, "bad-name", onnx_file=src)


def test_process_pool_gives_identical_files(exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Workers are separate processes: seeded weights and calibration must not depend on that."""
    import exporter.build as build

    repo, coe, _ = exported
    monkeypatch.setattr(build, "POOL_MIN_EXPERTS", 2)
    pooled = tmp_path / "pooled"
    summary = export_coe(coe, pooled, "python-ort", jobs=2)
    assert summary.exported == len(coe.experts)
    for name in coe.experts:
        assert (pooled / name / "1" / "model.onnx").read_bytes() == (repo / name / "1" / "model.onnx").read_bytes()
