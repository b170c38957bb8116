"""Bad input to ``coserve`` is one line naming the problem and exit 2, never a traceback, and is
refused before the work it would spoil: every case here failed before the CLI audit (a traceback,
exit 0, an error after minutes of work, or one naming the wrong file)."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.cli import EXIT_USAGE, main
from orchestrator.coe import dump_coe
from orchestrator.triton.launcher import free_port
from tests.unit.core.factories import make_coe
from tests.unit.exporter_factories import tiny_coe_yaml, user_onnx

LONG = "x" * 300  # longer than any file name the system takes (ENAMETOOLONG)


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A CoE file, an empty repository, a directory and a regular file to misuse as paths."""
    coe = tmp_path / "coe.yaml"
    coe.write_text(tiny_coe_yaml("t", 1))
    (tmp_path / "repo").mkdir()
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    return {"coe": coe, "repo": tmp_path / "repo", "adir": tmp_path / "adir", "afile": tmp_path / "afile"}


# ---- output files: refused by argparse before anything runs ---------------------------------------

def _commands(f: dict[str, Path]) -> dict[str, list[str]]:
    """Each command with an output flag, the flag last (its value is appended)."""
    plan = ["plan", "--profile", "paper-numa", "--task", "A1", "--cpu-bytes", "1e12", "--max-runs", "4"]
    bench = ["bench", "--coe", str(f["coe"]), "--repo", str(f["repo"] / "missing"), "--budget-bytes", "1"]
    return {
        # before: profiled through a real server for minutes, then "cannot write the profile"
        "profile --out": ["profile", "--coe", str(f["coe"]), "--repo", str(f["repo"]), "--out"],
        # before: ran every policy on Triton, then failed writing (--plot: a traceback)
        "bench --json": [*bench, "--json"],
        "bench --plot": [*bench, "--plot"],
        # before: searched, then failed (--json: naming the --out file)
        "plan --out": [*plan, "--out"],
        "plan --json": [*plan, "--out", str(f["adir"] / "p.yaml"), "--json"],
        # before: simulated, then failed; an empty path was ignored (exit 0, nothing written)
        "simulate --json": ["simulate", "--types", "4", "--requests", "10", "--policy", "coserve", "--json"],
    }


BAD_OUTPUTS = {
    "a directory": (lambda f: str(f["adir"]), "is a directory, not a file"),
    "under a file": (lambda f: str(f["afile"] / "x.out"), "is not a directory"),
    "empty": (lambda f: "", "must be a file path, got ''"),
    "name too long": (lambda f: str(f["adir"] / LONG), "File name too long"),
}


@pytest.mark.parametrize("bad", sorted(BAD_OUTPUTS))
@pytest.mark.parametrize(
    "command", ["profile --out", "bench --json", "bench --plot", "plan --out", "plan --json", "simulate --json"]
)
def test_an_unwritable_output_file_is_refused_before_anything_runs(
    command: str, bad: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, says = BAD_OUTPUTS[bad]
    argv = [*_commands(files)[command], path(files)]
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""  # nothing ran
    line = one_line(err)
    assert f"argument {command.split()[1]}: " in line and says in line, line


def test_missing_parent_folders_of_an_output_file_are_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "r.json"  # before: simulate failed on it after the run
    assert main(["simulate", "--types", "4", "--requests", "10", "--policy", "coserve", "--json", str(out)]) == 0
    assert out.is_file()


def test_plan_names_the_json_file_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails past the flag check (a full disk) names that file, not --out."""
    out, report = tmp_path / "p.yaml", tmp_path / "p.json"
    real = Path.write_text

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if self == report:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    code = main(["plan", "--profile", "paper-numa", "--task", "A1", "--cpu-bytes", "1e12", "--max-runs", "4",
                 "--out", str(out), "--json", str(report)])
    assert code == EXIT_USAGE
    assert one_line(capsys.readouterr().err) == f"coserve: error: {report}: cannot write (No space left on device)"


def test_bench_plot_write_error_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the PNG's OSError (after the whole bench) was a traceback."""
    from orchestrator import bench

    class Result:
        runs: dict[str, Any] = {}

        def sampler_cpu_share(self) -> float:
            return 0.0

    def refuse(result: object, path: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(bench, "budget_serve_file", lambda *a, **k: None)
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: Result())
    monkeypatch.setattr(bench, "format_table", lambda result: "table")
    monkeypatch.setattr(bench, "plot", refuse)
    png = tmp_path / "b.png"
    code = main(["bench", "--coe", "c.yaml", "--repo", str(tmp_path), "--budget-bytes", "1", "--plot", str(png)])
    assert code == EXIT_USAGE
    assert one_line(capsys.readouterr().err) == f"coserve: error: {png}: cannot write the plot (Permission denied)"


# ---- inputs that were accepted and ignored --------------------------------------------------------

@pytest.mark.parametrize("repo", ["missing", "afile"])
def test_bench_names_its_repo_flag_when_the_repo_is_not_a_directory(
    files: dict[str, Path], repo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "--budget-bytes: repo: ..." (the spec built from the flags named itself)."""
    path = files["repo"] / "missing" if repo == "missing" else files["afile"]
    code = main(["bench", "--coe", str(files["coe"]), "--repo", str(path), "--budget-bytes", "1000"])
    assert code == EXIT_USAGE
    assert one_line(capsys.readouterr().err) == f"coserve: error: --repo: {path}: not a model repository directory"


@pytest.mark.parametrize("repo", ["missing", "afile"])
def test_plan_refuses_a_repo_that_is_not_a_directory(
    repo: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: exit 0 and a serve config pointing at a repository that is not there."""
    coe = tmp_path / "board.yaml"
    dump_coe(make_coe(types=4), coe)
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "architectures:\n"
        "  classifier: {cpu: {k_s: 0.01, b_s: 0.01, max_batch: 4, load_time_s: {disk: 0.5}, weight_bytes: 1000000}}\n"
        "  detector: {cpu: {k_s: 0.02, b_s: 0.01, max_batch: 4, load_time_s: {disk: 0.5}, weight_bytes: 1000000}}\n"
    )
    where = str(tmp_path / "missing") if repo == "missing" else str(files["afile"])
    code = main(["plan", "--profile", str(profile), "--coe", str(coe), "--cpu-bytes", "1e9", "--max-runs", "4",
                 "--repo", where, "--out", str(tmp_path / "serve.yaml")])
    line = one_line(capsys.readouterr().err)
    assert code == EXIT_USAGE and line.startswith(f"coserve: error: --repo: {where}: not a model repository"), line
    assert not (tmp_path / "serve.yaml").exists()


@pytest.mark.parametrize(("flag", "value"), [("--outputs", "a,b,c"), ("--input-shape", "3,8,8")])
def test_expert_add_onnx_refuses_flags_for_modules(
    flag: str, value: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: ignored (exit 0, the ONNX file's own names and shape installed)."""
    onnx = user_onnx(files["adir"] / "m.onnx", np.ones((4, 2)))
    code = main(["expert", "add", "--repo", str(files["repo"]), "--name", "mine", "--onnx", str(onnx), flag, value])
    line = one_line(capsys.readouterr().err)
    assert code == EXIT_USAGE and line.startswith(f"coserve: error: {flag}: applies to --module only"), line
    assert list(files["repo"].iterdir()) == []


# ---- an unreachable --triton-url: before any export -----------------------------------------------

def test_demo_with_an_unreachable_triton_url_fails_before_exporting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: generated and exported the whole demo CoE (15 s here), then failed."""
    repo = tmp_path / "repo"
    url = f"127.0.0.1:{free_port()}"
    assert main(["demo", "--repo", str(repo), "--triton-url", url]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert f"Triton server at {url} is not reachable" in one_line(err)
    assert out == "" and not repo.exists()


# ---- paths the system refuses before a reader can name them: one line, not a traceback -----------

@pytest.mark.parametrize(
    "argv",
    [
        ["triton", "start", "--repo", "{long}"],
        ["repo", "load", "m", "--kind", "cpu", "--url", "127.0.0.1:1", "--repo", "{long}"],
        ["verdicts", "--board", "b", "--log", "{long}"],
        ["export", "--coe", "{coe}", "--out", "{long}"],
        ["expert", "add", "--repo", "{long}", "--name", "m", "--onnx", "{coe}"],
        ["expert", "add", "--repo", "{repo}", "--name", "m", "--onnx", "{long}"],
        ["profile", "--coe", "{coe}", "--repo", "{long}", "--out", "{repo}/p.yaml"],
        ["plan", "--profile", "{long}", "--coe", "{coe}", "--cpu-bytes", "1e9", "--out", "{repo}/p.yaml"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_file_name_too_long_is_one_line(
    argv: list[str], files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: ``Path.is_dir``/``is_file`` raised OSError (ENAMETOOLONG) out of main."""
    long = str(files["adir"] / LONG)
    code = main([a.format(long=long, coe=files["coe"], repo=files["repo"]) for a in argv])
    assert code == EXIT_USAGE
    assert one_line(capsys.readouterr().err) == f"coserve: error: {long}: File name too long"
