"""``coserve triton start`` and ``coserve repo ...`` run as subprocesses against real servers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.triton import processes
from orchestrator.triton.launcher import free_port
from tests.integration import factories

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("unload_all"), pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def coserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=90
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("coserve: error: "), result.stderr
    for word in words:
        assert word in lines[0]


def test_repo_list_load_status_unload(triton, triton_repo):
    where = ["--url", triton.grpc_url, "--repo", str(triton_repo)]
    listed = coserve("repo", "list", *where)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^cls_a\t", listed.stdout, re.M) and re.search(r"^cls_b\t", listed.stdout, re.M)

    loaded = coserve("repo", "load", "cls_a", "--kind", "cpu", "--count", "2", *where)
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded cls_a" in loaded.stdout and "cpu x2" in loaded.stdout
    assert len(triton.model_processes("cls_a")) == 2

    status = coserve("repo", "status", *where)
    assert status.returncode == 0, status.stderr
    row = next(line for line in status.stdout.splitlines() if line.startswith("cls_a "))
    assert "READY" in row and "cpu x2" in row
    assert re.search(r"^cls_b\s+\S+\s+(NOT LOADED|UNAVAILABLE)\s", status.stdout, re.M)

    unloaded = coserve("repo", "unload", "cls_a", *where)
    assert unloaded.returncode == 0, unloaded.stderr
    assert "unloaded cls_a" in unloaded.stdout
    # Over a URL the CLI waits for the index; the index shows UNLOADING until the processes exit.
    assert triton.model_processes("cls_a") == []


def test_repo_errors_are_one_clear_line(triton, triton_repo, tmp_path):
    where = ["--url", triton.grpc_url, "--repo", str(triton_repo)]
    assert_clean_error(coserve("repo", "load", "no_such_model", *where), "no_such_model", "no such model")
    assert_clean_error(
        coserve("repo", "load", "no_such_model", "--count", "2", *where), "no_such_model", "config.pbtxt"
    )
    assert_clean_error(coserve("repo", "unload", "no_such_model", *where), "no_such_model")
    zero = coserve("repo", "load", "cls_a", "--count", "0", *where)  # refused by argparse, before any call
    assert zero.returncode == 2 and "argument --count: must be >= 1, got 0" in zero.stderr
    assert "Traceback" not in zero.stderr
    assert_clean_error(coserve("repo", "load", "cls_a", "--kind", "cpu", "--gpus", "x", *where), "--gpus")
    assert_clean_error(
        coserve("repo", "load", "cls_a", "--count", "1", "--url", triton.grpc_url, "--repo", str(tmp_path / "gone")),
        "does not exist",
    )
    assert_clean_error(coserve("repo", "load", "cls_a", "--kind", "gpu", *where), "no GPUs are available")
    down = f"127.0.0.1:{free_port()}"
    assert_clean_error(coserve("repo", "status", "--url", down), "not reachable", down)
    # argparse rejects a bad kind itself (usage + one error line, exit 2, no traceback)
    bad_kind = coserve("repo", "load", "cls_a", "--kind", "tpu", *where)
    assert bad_kind.returncode == 2 and "invalid choice: 'tpu'" in bad_kind.stderr
    assert "Traceback" not in bad_kind.stderr


def test_triton_start_runs_in_the_foreground_until_sigterm(tmp_path):
    repo = tmp_path / "repo"
    factories.write_model(repo, "solo", factories.make_classifier_onnx())
    port = free_port()
    others = ["--http-port", str(free_port()), "--metrics-port", str(free_port())]
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "triton", "start", "--repo", str(repo), "--grpc-port", str(port),
         *others],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"grpc 127.0.0.1:{port}" in first, first + (proc.stderr.read() if proc.poll() is not None else "")
        server_pids = [pid for pid in processes.children(proc.pid)]
        assert len(server_pids) == 1
        loaded = coserve("repo", "load", "solo", "--url", f"127.0.0.1:{port}", "--repo", str(repo))
        assert loaded.returncode == 0, loaded.stderr
        stubs = processes.model_processes(server_pids[0])
        assert [p.model for p in stubs] == ["solo"]
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not processes.is_alive(server_pids[0])
    assert all(not processes.is_alive(p.pid) for p in stubs)
    assert all(not Path("/dev/shm", p.shm_region).exists() for p in stubs)
