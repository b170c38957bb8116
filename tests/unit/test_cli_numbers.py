"""The shared argparse number types (``orchestrator.cli_numbers``) apply the YAML reader's rules.

Each accepts exactly the values ``Reader.integer`` / ``Reader.number`` accept for the same bounds,
and refuses the rest with an ``ArgumentTypeError`` whose text argparse prints after the flag name.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from orchestrator import cli_numbers as cn

BAD_FLOATS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400"]


def _refused(parse: Callable[[str], object], text: str) -> str:
    with pytest.raises(argparse.ArgumentTypeError) as ei:
        parse(text)
    return str(ei.value)


@pytest.mark.parametrize(
    ("text", "value"), [("1", 1), ("80", 80), ("8001", 8001), ("65535", 65535), (" 42 ", 42)]
)
def test_port_accepts_1_to_65535(text: str, value: int) -> None:
    assert cn.port(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "must be in [1, 65535], got 0"),
        ("65536", "must be in [1, 65535], got 65536"),
        ("-1", "must be in [1, 65535], got -1"),
        ("abc", "must be an integer, got 'abc'"),
        ("", "must be an integer, got ''"),
        ("80.0", "must be an integer, got '80.0'"),
        ("nan", "must be an integer, got 'nan'"),
        ("inf", "must be an integer, got 'inf'"),
    ],
)
def test_port_refuses(text: str, message: str) -> None:
    assert _refused(cn.port, text) == message


def test_positive_int_boundary() -> None:
    assert cn.positive_int("1") == 1
    assert cn.positive_int("2500") == 2500
    assert _refused(cn.positive_int, "0") == "must be >= 1, got 0"
    assert _refused(cn.positive_int, "-3") == "must be >= 1, got -3"
    assert _refused(cn.positive_int, "2.5") == "must be an integer, got '2.5'"
    assert _refused(cn.positive_int, "nan") == "must be an integer, got 'nan'"


def test_nonneg_int_boundary() -> None:
    assert cn.nonneg_int("0") == 0
    assert cn.nonneg_int("7") == 7
    assert _refused(cn.nonneg_int, "-1") == "must be >= 0, got -1"
    assert _refused(cn.nonneg_int, "x") == "must be an integer, got 'x'"


def test_integer_with_both_bounds() -> None:
    parse = cn.integer(minimum=2, maximum=4)
    assert [parse(t) for t in ("2", "3", "4")] == [2, 3, 4]
    assert _refused(parse, "1") == "must be in [2, 4], got 1"
    assert _refused(parse, "5") == "must be in [2, 4], got 5"
    assert cn.integer()("-7") == -7  # no bounds: any integer


def test_positive_number_boundary() -> None:
    assert cn.positive_number("0.001") == 0.001
    assert cn.positive_number("1e9") == 1e9
    assert _refused(cn.positive_number, "0") == "must be > 0.0, got 0.0"
    assert _refused(cn.positive_number, "-0.0").startswith("must be > 0.0")
    assert _refused(cn.positive_number, "-1") == "must be > 0.0, got -1.0"
    assert _refused(cn.positive_number, "abc") == "must be a number, got 'abc'"


def test_nonneg_number_boundary() -> None:
    assert cn.nonneg_number("0") == 0.0
    assert cn.nonneg_number("-0") == 0.0
    assert cn.nonneg_number("4.5") == 4.5
    assert _refused(cn.nonneg_number, "-3") == "must be >= 0.0, got -3.0"
    assert _refused(cn.nonneg_number, "-1e-9").startswith("must be >= 0.0")


def test_fraction_is_zero_to_one_inclusive() -> None:
    assert [cn.fraction(t) for t in ("0", "0.3", "1")] == [0.0, 0.3, 1.0]
    assert _refused(cn.fraction, "1.5") == "must be in [0.0, 1.0], got 1.5"
    assert _refused(cn.fraction, "-0.1") == "must be in [0.0, 1.0], got -0.1"


def test_number_with_positive_and_maximum() -> None:
    parse = cn.number(positive=True, maximum=2000.0)
    assert parse("2000") == 2000.0
    assert _refused(parse, "0") == "must be in (0.0, 2000.0], got 0.0"
    assert _refused(parse, "2000.5") == "must be in (0.0, 2000.0], got 2000.5"


@pytest.mark.parametrize(
    "parse", [cn.positive_number, cn.nonneg_number, cn.fraction, cn.number(minimum=-5.0)]
)
@pytest.mark.parametrize("text", BAD_FLOATS)
def test_numbers_refuse_nan_and_infinity(parse: Callable[[str], float], text: str) -> None:
    assert _refused(parse, text).startswith("must be finite")


@pytest.mark.parametrize("parse", [cn.positive_int, cn.nonneg_int, cn.port, cn.integer()])
@pytest.mark.parametrize("text", BAD_FLOATS)
def test_integers_refuse_nan_and_infinity(parse: Callable[[str], int], text: str) -> None:
    assert _refused(parse, text).startswith("must be an integer")


def test_argparse_prints_the_flag_and_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    p = argparse.ArgumentParser(prog="coserve")
    p.add_argument("--grpc-port", type=cn.port)
    p.add_argument("--share", type=cn.fraction)
    args = p.parse_args(["--grpc-port", "8001", "--share", "0.5"])
    assert args == argparse.Namespace(grpc_port=8001, share=0.5)
    with pytest.raises(SystemExit) as ei:
        p.parse_args(["--grpc-port", "70000"])
    assert ei.value.code == 2
    assert "argument --grpc-port: must be in [1, 65535], got 70000" in capsys.readouterr().err
