"""CoE definition files: valid files round-trip; invalid ones name the file, the field and the problem."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.coe import dump_coe, load_coe, parse_coe
from orchestrator.errors import ConfigError


def make_doc() -> dict[str, Any]:
    return {
        "name": "tiny",
        "seed": 3,
        "image": {"channels": 3, "height": 32, "width": 32},
        "experts": [
            {"name": "cls_a", "arch": "classifier", "size_mb": 1.0, "num_classes": 4},
            {"name": "cls_b", "arch": "classifier", "size_mb": 1.0},
            {"name": "det_0", "arch": "detector", "size_mb": 2.0, "num_classes": 3},
        ],
        "routing": [
            {"component_type": "a", "classifier": "cls_a", "no_defect_prob": 0.9, "detector": "det_0"},
            {"component_type": "b", "classifier": "cls_b", "no_defect_prob": 0.7},
        ],
        "board": {"name": "tiny_board", "mix": {"a": 10, "b": 3}},
    }


def test_valid_definition_round_trips(tmp_path: Path) -> None:
    coe = parse_coe(make_doc(), source="x.yaml")
    assert [e.name for e in coe.classifiers()] == ["cls_a", "cls_b"]
    assert coe.routing["a"].detector == "det_0" and coe.routing["b"].detector is None
    assert coe.experts["cls_a"].input_shape == (3, 32, 32)
    path = tmp_path / "coe.yaml"
    dump_coe(coe, path)
    assert load_coe(path) == coe


def _mutated(edit) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    doc = copy.deepcopy(make_doc())
    edit(doc)
    return doc


BAD_CASES = [
    ("missing name", lambda d: d.pop("name"), "name", "is required"),
    ("unknown top field", lambda d: d.update(colour=1), "colour", "unknown field"),
    ("bad arch", lambda d: d["experts"][0].update(arch="transformer"), "experts[0].arch", "must be one of"),
    ("negative size", lambda d: d["experts"][1].update(size_mb=-1), "experts[1].size_mb", "must be in"),
    ("duplicate expert", lambda d: d["experts"][1].update(name="cls_a"), "experts[1].name", "duplicate"),
    ("bad expert name", lambda d: d["experts"][0].update(name="cls-a"), "experts[0].name", "letters, digits"),
    ("classifier with 1 class", lambda d: d["experts"][0].update(num_classes=1), "experts[0].num_classes", "at least 2"),
    ("bad input shape", lambda d: d["experts"][0].update(input_shape=[3, 32]), "experts[0].input_shape", "[channels, height, width]"),
    ("unknown classifier", lambda d: d["routing"][0].update(classifier="cls_z"), "routing[0].classifier", "unknown expert"),
    ("detector as classifier", lambda d: d["routing"][0].update(classifier="det_0"), "routing[0].classifier", "not a classifier"),
    ("classifier as detector", lambda d: d["routing"][0].update(detector="cls_b"), "routing[0].detector", "not a detector"),
    ("probability > 1", lambda d: d["routing"][1].update(no_defect_prob=1.5), "routing[1].no_defect_prob", "must be in"),
    ("duplicate rule", lambda d: d["routing"][1].update(component_type="a"), "routing[1].component_type", "duplicate"),
    ("mix type without rule", lambda d: d["board"]["mix"].update(zz=4), "board.mix.zz", "no routing rule"),
    ("negative count", lambda d: d["board"]["mix"].update(a=-2), "board.mix.a", ">= 0"),
    ("empty board", lambda d: d["board"].update(mix={"a": 0, "b": 0}), "board.mix", "at least one component"),
    ("experts not a list", lambda d: d.update(experts={"x": 1}), "experts", "must be a list"),
    ("image too small", lambda d: d["image"].update(height=4), "image.height", ">= 8"),
]


@pytest.mark.parametrize(("case", "edit", "field", "problem"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_invalid_definitions_name_file_field_problem(tmp_path: Path, case: str, edit, field: str, problem: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_mutated(edit)))
    with pytest.raises(ConfigError) as info:
        load_coe(path)
    err = info.value
    assert err.source == str(path)
    assert err.field == field
    assert problem in err.problem
    assert str(path) in str(err) and field in str(err)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_coe(tmp_path / "missing.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_coe(bad)
    assert info.value.source == str(bad)


def test_non_utf8_file_and_directory_name_the_file(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(yaml.safe_dump(make_doc()).encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_coe(latin1)
    assert info.value.source == str(latin1) and info.value.problem.startswith("not UTF-8 text (byte 0xe9 at offset")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot read file") as info:
        load_coe(folder)
    assert info.value.source == str(folder)


def test_yaml_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: tiny\nexperts: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_coe(bad)
    assert "\n" not in str(info.value) and "line 3" in info.value.problem
    date = tmp_path / "date.yaml"
    date.write_text("name: 2001-02-30\n")  # PyYAML raises ValueError (not YAMLError) for this date
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_coe(date)
