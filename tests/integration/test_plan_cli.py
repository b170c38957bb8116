"""``coserve plan`` on a measured profile of the tiny board: the file it writes is read by
``coserve simulate --config`` and served for real by ``coserve bench``'s library."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.bench import run_bench
from orchestrator.cli import main
from orchestrator.coe import CoEDefinition
from orchestrator.serve_file import load_serve_file

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_plan_writes_a_config_that_simulate_and_the_real_server_accept(
    tiny_board: tuple[CoEDefinition, Path], tiny_profile: Path, tiny_coe_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, shared_repo = tiny_board
    repo = tmp_path / "repo"
    shutil.copytree(shared_repo, repo)
    shutil.copy(tiny_profile, repo / "profile.yaml")
    out = tmp_path / "plan" / "serve.yaml"
    code = main(["plan", "--profile", str(repo / "profile.yaml"), "--coe", str(tiny_coe_file), "--cpu-bytes", "160e6",
                 "--seeds", "1", "--requests", "40", "--max-runs", "30", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "chosen:" in printed and out.is_file()
    text = out.read_text()
    assert "# predicted throughput" in text and "own model process" in text

    spec = load_serve_file(out)  # coserve serve's reader
    assert spec.repo.resolve() == repo.resolve() and spec.coe.resolve() == tiny_coe_file.resolve()
    assert sum(e.budget_bytes for e in spec.config.executors) < 160_000_000  # the servers' idle memory is off
    assert main(["simulate", "--profile", str(repo / "profile.yaml"), "--coe", str(tiny_coe_file),
                 "--config", str(out), "--policy", spec.config.policy, "--requests", "40"]) == 0

    result = run_bench(spec, policies=[spec.config.policy], requests=20, warmup=10, all_resident=False)
    run = result.runs[spec.config.policy]
    assert run.errors == 0 and run.completed == 20
