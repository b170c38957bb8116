"""``coserve plan`` refuses bad input with one line and exit status 2 (no search is run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import EXIT_USAGE, main


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--profile", "paper-numa", "--cpu-bytes", "1e9"], "a preset needs --task"),
        (["--profile", "no-such.yaml", "--coe", "c.yaml", "--cpu-bytes", "1e9"], "no such file"),
        (["--profile", "paper-numa", "--task", "A1", "--cpu-bytes", "1e6", "--gpu-bytes", "1e6"], "no layout fits"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["plan", *argv, "--out", str(tmp_path / "plan.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(err) == 1 and says in err[0], err
    assert not (tmp_path / "plan.yaml").exists()


def test_a_negative_byte_count_is_refused_by_the_parser(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--profile", "paper-numa", "--task", "A1", "--cpu-bytes", "-5", "--out", str(tmp_path / "p.yaml")])
    assert exc.value.code == EXIT_USAGE
