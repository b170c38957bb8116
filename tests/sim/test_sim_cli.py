"""The ``coserve simulate`` command: JSON format, determinism across processes, user errors."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli_simulate import register
from orchestrator.errors import ConfigError, CoserveError

pytestmark = pytest.mark.sim

KEYS = {"throughput_img_s", "switches", "p50_latency_s", "p99_latency_s", "initial_loads", "loads_by_tier"}
SMALL = ["--types", "40", "--requests", "200", "--seed", "5"]


def _run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="coserve")
    sub = p.add_subparsers(dest="command", required=True)
    register(sub)
    args = p.parse_args(argv)
    return int(args.func(args))


def test_json_has_exactly_the_specified_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    assert (
        _run(
            [
                "simulate",
                "--preset",
                "paper-numa",
                *SMALL,
                "--policy",
                "coserve",
                "--policy",
                "samba-lru",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert set(data) == {"coserve", "samba-lru", "all-resident", "compulsory"}
    for v in data.values():
        assert set(v) == KEYS
        assert isinstance(v["loads_by_tier"], dict)
    table = capsys.readouterr().out
    assert "coserve" in table and "compulsory" in table and "switches" in table


def test_json_identical_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    code = (
        "import argparse, sys\n"
        "from orchestrator.cli_simulate import register\n"
        "p = argparse.ArgumentParser(); s = p.add_subparsers(dest='c', required=True); register(s)\n"
        "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n"
    )
    outs = []
    for seed in ("0", "12345"):
        out = tmp_path / f"r{seed}.json"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                "simulate",
                "--preset",
                "paper-uma",
                *SMALL,
                "--detectors",
                "3",
                "--policy",
                "coserve",
                "--policy",
                "samba-parallel",
                "--policy",
                "em",
                "--json",
                str(out),
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_profile_and_coe_replay(tmp_path: Path) -> None:
    from orchestrator.coe import dump_coe
    from tests.unit.core.factories import make_coe

    coe = tmp_path / "coe.yaml"
    dump_coe(make_coe(types=8), coe)
    prof = tmp_path / "p.yaml"
    prof.write_text(
        "architectures:\n"
        "  classifier: {gpu: {k_s: 0.01, b_s: 0.01, max_batch: 4, load_time_s: {disk: 0.5}}}\n"
        "  detector: {gpu: {k_s: 0.02, b_s: 0.01, max_batch: 4, load_time_s: {disk: 0.5}}}\n"
    )
    out = tmp_path / "r.json"
    assert (
        _run(
            [
                "simulate",
                "--profile",
                str(prof),
                "--coe",
                str(coe),
                "--requests",
                "50",
                "--policy",
                "coserve",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["coserve"]["throughput_img_s"] > 0


@pytest.mark.parametrize("flag", [["--types", "10"], ["--zipf", "1.2"], ["--detectors", "2"], ["--detector-share", "0.5"]])
def test_coe_refuses_flags_that_shape_a_paper_board(flag: list[str], tmp_path: Path) -> None:
    # these flags were silently ignored with --coe (the CoE fixes its board): refused, naming the flag
    from orchestrator.coe import dump_coe
    from tests.unit.core.factories import make_coe

    coe = tmp_path / "coe.yaml"
    dump_coe(make_coe(types=8), coe)
    with pytest.raises(CoserveError, match=f"{flag[0]}.*CoE file defines"):
        _run(["simulate", "--coe", str(coe), "--requests", "20", "--policy", "coserve", *flag])


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--policy", "magic", *SMALL],
        ["simulate", "--preset", "paper-tpu", *SMALL],
        ["simulate", "--profile", "/nonexistent/p.yaml"],
        ["simulate", "--coe", "/nonexistent/coe.yaml"],
        ["simulate", "--preset", "paper-numa", "--profile", "x.yaml"],
    ],
)
def test_user_errors_are_coserve_errors(argv: list[str]) -> None:
    with pytest.raises(CoserveError):
        _run(argv)


def test_bad_serve_config_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("executors: [{name: g, kind: gpu, budget_bytes: lots}]\n")
    with pytest.raises(ConfigError) as ei:
        _run(["simulate", "--config", str(cfg), *SMALL])
    assert ei.value.field == "executors[0].budget_bytes" and str(cfg) in str(ei.value)


# ---- unreadable config files: one line naming the file, exit 2, never a traceback ----------------

BAD_FILES = {
    "not UTF-8": (b"\xff\xfe", "not UTF-8 text (byte 0xff at offset 0)"),
    "not UTF-8 after text": (b"name: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 9)"),
    "not YAML": (b"name: [unclosed\n", "not valid YAML"),
    "bad date": (b"name: 2001-02-30\n", "not valid YAML"),
}


@pytest.mark.parametrize("flag", ["--coe", "--profile", "--config", "--preset"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_config_file_is_one_line_naming_the_file(
    flag: str, case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli import main

    content, problem = BAD_FILES[case]
    bad = tmp_path / "b.yaml"
    bad.write_bytes(content)
    assert main(["simulate", flag, str(bad), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err == f"coserve: error: {bad}: {problem}\n" or (
        problem == "not valid YAML" and err.startswith(f"coserve: error: {bad}: not valid YAML")
    )
    assert err.count("\n") == 1


@pytest.mark.parametrize("flag", ["--coe", "--profile", "--config", "--preset"])
def test_directory_given_as_config_file(flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli import main

    folder = tmp_path / "d.yaml"
    folder.mkdir()
    assert main(["simulate", flag, str(folder), *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"coserve: error: {folder}: cannot read file") and err.count("\n") == 1


# ---- numeric flags: refused by argparse (usage line, exit 2) before anything runs -----------------

BAD_NUMBERS = [
    ("--requests", "-3", "must be >= 1, got -3"),
    ("--requests", "0", "must be >= 1, got 0"),
    ("--requests", "2.5", "must be an integer"),
    ("--types", "-3", "must be >= 1, got -3"),
    ("--types", "0", "must be >= 1, got 0"),
    ("--interval-ms", "-3", "must be >= 0.0, got -3.0"),
    ("--interval-ms", "inf", "must be finite"),
    ("--interval-ms", "nan", "must be finite"),
    ("--zipf", "nan", "must be finite"),
    ("--zipf", "-1", "must be >= 0.0, got -1.0"),
    ("--detectors", "-1", "must be >= 0, got -1"),
    ("--detectors", "-2", "must be >= 0, got -2"),
    ("--detector-share", "1.5", "must be in [0.0, 1.0], got 1.5"),
    ("--detector-share", "-0.1", "must be in [0.0, 1.0], got -0.1"),
    ("--detector-share", "nan", "must be finite"),
    ("--seed", "-1", "must be >= 0, got -1"),
    ("--seed", "abc", "must be an integer, got 'abc'"),
    ("--starvation-bound-s", "-1", "must be > 0.0, got -1.0"),
    ("--starvation-bound-s", "0", "must be > 0.0, got 0.0"),
    ("--starvation-bound-s", "nan", "must be finite"),
    ("--cpu-cache-bytes", "-1", "must be >= 0.0, got -1.0"),
    ("--cpu-cache-bytes", "nan", "must be finite"),
    ("--cpu-cache-bytes", "inf", "must be finite"),
    ("--warmup-tasks", "-1", "must be >= 0, got -1"),
    ("--warmup-tasks", "1.5", "must be an integer"),
]


@pytest.mark.parametrize("workload", ["task", "coe"])
@pytest.mark.parametrize(
    ("flag", "value", "message"), BAD_NUMBERS, ids=[f"{f}={v}" for f, v, _ in BAD_NUMBERS]
)
def test_bad_numbers_are_refused_before_running(
    flag: str, value: str, message: str, workload: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli import main

    if workload == "coe":  # a CoE file used to skip the workload's own checks (-3 requests: exit 0)
        from orchestrator.coe import dump_coe
        from tests.unit.core.factories import make_coe

        dump_coe(make_coe(types=4), tmp_path / "coe.yaml")
        argv = ["simulate", "--coe", str(tmp_path / "coe.yaml"), "--policy", "coserve", flag, value]
    else:
        argv = ["simulate", *SMALL, "--policy", "coserve", flag, value]
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran: no table
    assert f"argument {flag}: {message}" in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize(
    "extra",
    [
        ["--interval-ms", "0"],
        ["--detectors", "0"],
        ["--detector-share", "0"],
        ["--detector-share", "1"],
        ["--zipf", "0"],
        ["--seed", "0"],
        ["--requests", "1"],
        ["--types", "1"],
        ["--cpu-cache-bytes", "0"],
        ["--starvation-bound-s", "0.5"],
    ],
    ids=lambda a: "=".join(a),
)
def test_boundary_numbers_are_accepted(extra: list[str], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    argv = ["simulate", "--preset", "paper-numa", *SMALL, "--policy", "coserve", *extra, "--json", str(out)]
    assert _run(argv) == 0
    data = json.loads(out.read_text())
    assert data["coserve"]["throughput_img_s"] >= 0


def test_coe_replay_with_zero_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.coe import dump_coe
    from tests.unit.core.factories import make_coe

    coe = tmp_path / "coe.yaml"
    dump_coe(make_coe(types=4), coe)
    argv = ["simulate", "--coe", str(coe), "--policy", "coserve", "--interval-ms", "0", "--requests", "20"]
    assert _run(argv) == 0
    assert "coserve" in capsys.readouterr().out


def test_old_switches_key_warns_once_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("executors: [{name: g, kind: gpu, budget_bytes: 4e9}]\nswitches: {prefetch: true}\n")
    assert _run(["simulate", "--config", str(cfg), *SMALL, "--policy", "coserve"]) == 0
    err = capsys.readouterr().err
    assert err == f"coserve: warning: {cfg}: 'switches:' is deprecated, rename it to 'features:'\n"


def test_start_modes(tmp_path: Path) -> None:
    outs = {}
    for name, extra in (
        ("default", []),
        ("warm1", ["--warmup-tasks", "1"]),
        ("warm2", ["--warmup-tasks", "2"]),
        ("cold", ["--cold-start"]),
        ("zero", ["--warmup-tasks", "0"]),
    ):
        out = tmp_path / f"{name}.json"
        assert _run(["simulate", *SMALL, "--policy", "coserve", "--policy", "samba-lru", *extra, "--json", str(out)]) == 0
        outs[name] = json.loads(out.read_text())
    assert outs["default"] == outs["warm1"] != outs["warm2"]
    assert outs["cold"] == outs["zero"] != outs["default"]
    assert outs["cold"]["coserve"]["initial_loads"] == 0 < outs["default"]["coserve"]["initial_loads"]
    with pytest.raises(ConfigError):
        _run(["simulate", *SMALL, "--cold-start", "--warmup-tasks", "2"])
