"""``coserve serve`` end to end: a serve config -> two embedded servers + engine + gRPC API.

A board streams through ``InspectBoard`` from the typed client; every verdict matches ONNX
Runtime run directly on the same images, the health service goes SERVING, ``Status`` shows both
executors within budget, and the same file is accepted by ``coserve simulate --config``.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.board_source import BoardSource
from orchestrator.cli import main
from orchestrator.client import InspectionClient
from orchestrator.coe import CoEDefinition, dump_coe
from orchestrator.core.profile import profile_to_data
from orchestrator.engine.types import InspectRequest, Verdict
from orchestrator.frontend.board import BoardSummary
from orchestrator.serve import Service, serve_until_done
from orchestrator.serve_file import load_serve_file
from orchestrator.triton.launcher import free_port
from tests.integration.test_engine_triton import MB, PROFILE, reference_outcome

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]


def write_serve_config(tmp_path: Path, coe: CoEDefinition, repo: Path) -> Path:
    dump_coe(coe, tmp_path / "coe.yaml")
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile_to_data(PROFILE)))
    config = {
        "coe": "coe.yaml", "repo": str(repo), "profile": "profile.yaml", "listen": f"127.0.0.1:{free_port()}",
        "queue_bound": 1000, "policy": "coserve",
        "servers": [{"name": "local0"}, {"name": "local1"}],
        "executors": [
            {"name": "cpu0", "kind": "cpu", "budget_bytes": 130 * MB, "server": "local0"},
            {"name": "cpu1", "kind": "cpu", "budget_bytes": 130 * MB, "server": "local1"},
        ],
    }
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_board_streams_through_the_service(tiny_board: tuple[CoEDefinition, Path], tmp_path: Path) -> None:
    coe, repo = tiny_board
    spec = load_serve_file(write_serve_config(tmp_path, coe, repo))
    requests = list(BoardSource(coe, seed=5, defect_share=0.2).requests(None, order="board", encoding="png"))
    got: list[Verdict] = []
    summaries: list[BoardSummary] = []
    statuses = []

    async def client_side(service: Service) -> None:
        async with InspectionClient(service.address, timeout=60) as client:
            await client.wait_until_serving(10.0)
            assert await client.health() == "SERVING"
            images = [InspectRequest("board-5", str(r.request_id), r.component_type, r.image) for r in requests]
            async for item in client.inspect_board(images):
                (summaries if isinstance(item, BoardSummary) else got).append(item)  # type: ignore[arg-type]
            statuses.append(await client.status())

    asyncio.run(serve_until_done(spec, client_side))
    sessions: dict = {}
    expected = {str(r.request_id): reference_outcome(coe, repo, r.component_type, r.image, sessions) for r in requests}
    assert {v.component_id: v.outcome for v in got} == expected
    assert len(summaries) == 1
    [status] = statuses
    assert status.serving and status.policy == "coserve"
    assert {e.name: e.server for e in status.executors} == {"cpu0": "local0", "cpu1": "local1"}
    assert all(e.used_bytes <= e.budget_bytes == 130 * MB for e in status.executors)
    assert {(sv.name, sv.embedded, sv.healthy, sv.accounting) for sv in status.servers} == {
        ("local0", True, True, "measured"), ("local1", True, True, "measured")}
    # the simulator reads the same file (it ignores what only serving needs)
    assert main(["simulate", "--config", str(spec.source), "--coe", str(tmp_path / "coe.yaml"),
                 "--profile", str(tmp_path / "profile.yaml"), "--policy", "coserve"]) == 0


def test_serve_stops_gracefully_on_sigterm(tiny_board: tuple[CoEDefinition, Path], tmp_path: Path) -> None:
    coe, repo = tiny_board
    path = write_serve_config(tmp_path, coe, repo)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "serving" in line or not line:
                break
        assert any("serving demo" in line or "serving" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
