"""The exporter's commands through ``orchestrator.cli.main``: results, exit codes, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from exporter.generate import top_share
from orchestrator.cli import main
from orchestrator.coe import load_coe
from tests.unit.exporter_factories import tiny_coe_yaml


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "demo.yaml"
    code, out, _ = run(capsys, "coe", "generate", "--preset", "demo", "--out", str(out_file))
    assert code == 0 and "20 component types" in out
    coe = load_coe(out_file)
    assert 20 <= len(coe.experts) <= 28 and len(coe.detectors()) >= 2
    assert all(e.size_mb <= 8 for e in coe.experts.values()) and coe.image.shape == (3, 64, 64)
    # deterministic: the same command writes the same file
    again = tmp_path / "again.yaml"
    run(capsys, "coe", "generate", "--preset", "demo", "--out", str(again))
    assert again.read_text() == out_file.read_text()


@pytest.mark.parametrize(("preset", "types"), [("pcb-a", 352), ("pcb-b", 342)])
def test_generate_paper_boards(tmp_path: Path, capsys: pytest.CaptureFixture[str], preset: str, types: int) -> None:
    out_file = tmp_path / "b.yaml"
    code, _, _ = run(capsys, "coe", "generate", "--preset", preset, "--out", str(out_file))
    assert code == 0
    coe = load_coe(out_file)
    assert len(coe.routing) == types and len(coe.classifiers()) == types
    assert 2 <= len(coe.detectors()) <= 6
    assert abs(top_share(dict(coe.board.mix)) - 0.6) <= 0.03
    counts = sorted(coe.board.mix.values(), reverse=True)
    assert counts[0] > 10 * counts[-1]  # skewed, with a thin tail
    # the classifiers say "no defect" for most images, and a few detectors are widely shared
    routed = [r for r in coe.routing.values() if r.detector]
    assert 0.3 * types <= len(routed) <= 0.5 * types
    assert all(0.5 <= r.no_defect_prob <= 1 for r in coe.routing.values())


def test_generate_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "c.yaml"
    code, _, _ = run(capsys, "coe", "generate", "--preset", "pcb-a", "--types", "40", "--detectors", "2",
                     "--detector-share", "0.25", "--zipf", "1.2", "--seed", "99", "--classifier-mb", "179",
                     "--detector-mb", "84", "--out", str(out_file))
    assert code == 0
    coe = load_coe(out_file)
    assert len(coe.routing) == 40 and len(coe.detectors()) == 2 and coe.seed == 99
    assert sum(1 for r in coe.routing.values() if r.detector) == 10
    assert {e.size_mb for e in coe.classifiers()} == {179.0} and {e.size_mb for e in coe.detectors()} == {84.0}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["coe", "generate", "--preset", "pcb-z"], "unknown preset 'pcb-z'"),
        (["coe", "generate", "--classifier-mb", "2001"], "classifier_mb: must be in (0, 2000]"),
        (["export", "--coe", "{tmp}/missing.yaml", "--out", "{tmp}/r"], "missing.yaml: cannot read file"),
        (["export", "--coe", "{tmp}/broken.yaml", "--out", "{tmp}/r"], "broken.yaml: experts[0].arch: must be one of"),
        (["export", "--coe", "{tmp}/ok.yaml", "--out", "{tmp}/r", "--target", "tensorrt"], "unknown target 'tensorrt'"),
        (["export", "--coe", "{tmp}/ok.yaml", "--out", "{tmp}/r", "--only", "cls_t000,ghost"], "unknown expert(s) ghost"),
        (["export", "--coe", "{tmp}/badparams.yaml", "--out", "{tmp}/r"], "badparams.yaml: experts[0].params: unknown zoo parameter"),
        (["expert", "add", "--repo", "{tmp}/r", "--name", "x", "--onnx", "{tmp}/none.onnx"], "none.onnx: ONNX file not found"),
        (["expert", "add", "--repo", "{tmp}/r", "--name", "x", "--onnx", "{tmp}/junk.onnx"], "not a readable ONNX model"),
        (["expert", "add", "--repo", "{tmp}/r", "--name", "x", "--module", "nowhere_pkg.mod:f", "--input-shape", "3,8,8"],
         "cannot import module 'nowhere_pkg.mod'"),
        (["expert", "add", "--repo", "{tmp}/r", "--name", "x", "--module", "json:dumps"], "--input-shape: is required"),
    ],
)
def test_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    doc = yaml.safe_load(OK_COE)
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(doc))
    doc["experts"][0]["params"] = {"heads": 8}
    (tmp_path / "badparams.yaml").write_text(yaml.safe_dump(doc))
    doc["experts"][0]["arch"] = "transformer"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "junk.onnx").write_bytes(b"definitely not protobuf" * 3)
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if args[:2] == ["coe", "generate"]:
        args += ["--out", str(tmp_path / "x.yaml")]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert err.startswith("coserve: error: ") and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"types": 0}, "types: must be >= 1"),
        ({"detectors": -1}, "detectors: must be >= 0"),
        ({"detector_share": 1.5}, "detector_share: must be in [0, 1]"),
        ({"zipf": -0.5}, "zipf: must be >= 0"),
        ({"seed": -1}, "seed: must be >= 0"),
        ({"classifier_mb": 0}, "classifier_mb: must be in (0, 2000]"),
    ],
)
def test_generate_checks_its_options(change: dict[str, object], message: str) -> None:
    """The library checks too (the CLI refuses these earlier, in argparse: test_exporter_cli_numbers)."""
    from dataclasses import replace

    from exporter.generate import PRESETS, generate
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        generate(replace(PRESETS["demo"], **change))  # type: ignore[arg-type]


def test_export_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    coe_file = tmp_path / "ok.yaml"
    doc = yaml.safe_load(OK_COE)
    coe_file.write_text(yaml.safe_dump(doc))
    code, out, _ = run(capsys, "export", "--coe", str(coe_file), "--out", str(tmp_path / "repo"), "--jobs", "1")
    assert code == 0 and "exported 2 expert(s)" in out and "parity" in out and "calibration" in out
    assert (tmp_path / "repo" / "cls_t000" / "config.pbtxt").is_file()
    code, out, _ = run(capsys, "export", "--coe", str(coe_file), "--out", str(tmp_path / "repo"), "--target", "onnxruntime")
    assert code == 0 and "reused 2 unchanged" in out
    assert 'backend: "onnxruntime"' in (tmp_path / "repo" / "det_0" / "config.pbtxt").read_text()


OK_COE = tiny_coe_yaml("cli_tiny", 1)


def test_generate_says_which_detectors_nothing_routes_to(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # one type, five detectors: four would be exported and never run (the CLI audit found it
    # written silently); mutation: the note left out, or given when every detector is used
    code, out, err = run(capsys, "coe", "generate", "--preset", "pcb-a", "--types", "1", "--detectors", "5",
                         "--detector-share", "1", "--out", str(tmp_path / "c.yaml"))
    assert code == 0 and "wrote" in out
    assert re.search(r"no component type is routed to 4 detector\(s\)", err), err
    code, _, err = run(capsys, "coe", "generate", "--preset", "pcb-a", "--types", "40", "--detectors", "2",
                       "--detector-share", "1", "--out", str(tmp_path / "d.yaml"))
    assert code == 0 and "no component type is routed" not in err
