"""The exporter's numeric flags and ``--only`` are validated before anything runs.

Numbers go through ``orchestrator.cli_numbers`` (argparse: usage line, exit 2, no traceback);
``--only`` and cross-flag rules are ``ConfigError`` (``coserve: error: ...``, exit 2).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.unit.exporter_factories import tiny_coe_yaml

COE = tiny_coe_yaml("numbers_tiny", 1)

GEN = ["coe", "generate", "--out", "{tmp}/x.yaml"]
EXP = ["export", "--coe", "{tmp}/ok.yaml", "--out", "{tmp}/r"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (GEN + ["--components", "-10"], "argument --components: must be >= 1, got -10"),
        (GEN + ["--components", "0"], "argument --components: must be >= 1"),
        (GEN + ["--zipf", "nan"], "argument --zipf: must be finite"),
        (GEN + ["--zipf", "inf"], "argument --zipf: must be finite"),
        (GEN + ["--zipf", "-1"], "argument --zipf: must be >= 0"),
        (GEN + ["--types", "0"], "argument --types: must be >= 1"),
        (GEN + ["--types", "2.5"], "argument --types: must be an integer"),
        (GEN + ["--detectors", "-1"], "argument --detectors: must be >= 0"),
        (GEN + ["--detector-share", "1.5"], "argument --detector-share: must be in [0.0, 1.0]"),
        (GEN + ["--detector-share", "nan"], "argument --detector-share: must be finite"),
        (GEN + ["--seed", "-3"], "argument --seed: must be >= 0"),
        (GEN + ["--classifier-mb", "0"], "argument --classifier-mb: must be > 0"),
        (GEN + ["--classifier-mb", "nan"], "argument --classifier-mb: must be finite"),
        (GEN + ["--detector-mb", "-4"], "argument --detector-mb: must be > 0"),
        (GEN + ["--image-size", "0"], "argument --image-size: must be >= 8"),
        (GEN + ["--image-size", "7"], "argument --image-size: must be >= 8"),
        (EXP + ["--jobs", "0"], "argument --jobs: must be >= 1, got 0"),
        (EXP + ["--jobs", "-2"], "argument --jobs: must be >= 1, got -2"),
        (EXP + ["--jobs", "two"], "argument --jobs: must be an integer"),
        (["expert", "add", "--repo", "{tmp}/r", "--name", "x", "--module", "m:f", "--input-shape", "3,0,8"],
         "argument --input-shape: must be C,H,W"),
        (["expert", "add", "--repo", "{tmp}/r", "--name", "x", "--module", "m:f", "--input-shape", "3,8"],
         "argument --input-shape: must be C,H,W"),
    ],
)
def test_bad_numbers_are_refused_by_argparse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "ok.yaml").write_text(COE)
    with pytest.raises(SystemExit) as exc:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.yaml").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (EXP + ["--only", ""], "--only: names no expert"),
        (EXP + ["--only", " , ,"], "--only: names no expert"),
        (EXP + ["--only", "ghost,cls_t000,phantom"], "--only: unknown expert(s) ghost, phantom"),
        (GEN + ["--types", "20", "--components", "5"], "--components: must be >= --types (20)"),
        (GEN + ["--detector-mb", "2001"], "detector_mb: must be in (0, 2000] MB"),  # generate()'s upper bound
    ],
)
def test_bad_selection_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "ok.yaml").write_text(COE)
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("coserve: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "x.yaml").exists() and not (tmp_path / "r" / "cls_t000").exists()


def test_components_below_types_from_the_preset_still_rise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only an explicit --components is refused; the preset's count rises to cover --types."""
    out_file = tmp_path / "x.yaml"
    code = main(["coe", "generate", "--preset", "demo", "--types", "500", "--out", str(out_file)])
    out = capsys.readouterr().out
    assert code == 0 and "500 component types" in out and "500 components per board" in out


def test_valid_edge_values_are_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "x.yaml"
    code = main(["coe", "generate", "--types", "3", "--detectors", "0", "--detector-share", "0", "--zipf", "0",
                 "--seed", "0", "--components", "3", "--image-size", "8", "--classifier-mb", "0.1",
                 "--detector-mb", "2000", "--out", str(out_file)])
    out = capsys.readouterr().out
    assert code == 0 and "3 component types" in out and "0 detectors" in out


def test_only_duplicates_export_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ok.yaml").write_text(COE)
    code = main(EXP[:1] + ["--coe", str(tmp_path / "ok.yaml"), "--out", str(tmp_path / "r"),
                           "--jobs", "1", "--only", "cls_t000, cls_t000"])
    out = capsys.readouterr().out
    assert code == 0 and "exported 1 expert(s)" in out
