"""The verdict log on a real ``coserve serve`` (embedded Triton, gRPC API, a subprocess):

1. a board streams; the orchestrator is killed with SIGKILL right after the last answer; every
   answered verdict is in the log, with the experts' versions and their model files' SHA-256;
2. a restart on the same log restores the learned usage probabilities, answers a retry of an
   answered component with the recorded verdict (not inspected again: same times), inspects a
   new one, and ``coserve verdicts --board`` shows the board;
3. a log that cannot grow (RLIMIT_FSIZE set on the running orchestrator with ``prlimit``: its
   writes fail with EFBIG, a full disk without root) makes the service refuse work with
   UNAVAILABLE naming the log, report NOT_SERVING, say so in Status and metrics, and serve again
   once the limit is lifted.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from orchestrator.board_source import BoardSource
from orchestrator.client import RemoteNotServing, SyncInspectionClient
from orchestrator.coe import CoEDefinition, dump_coe
from orchestrator.core.profile import profile_to_data
from orchestrator.engine.types import InspectRequest, Verdict
from orchestrator.frontend.board import BoardSummary
from orchestrator.triton.launcher import free_port
from orchestrator.verdicts.store import open_read_only
from tests.integration.test_engine_triton import MB, PROFILE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, coe: CoEDefinition, repo: Path, **extra: object) -> Path:
    dump_coe(coe, tmp_path / "coe.yaml")
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile_to_data(PROFILE)))
    config = {
        "coe": "coe.yaml", "repo": str(repo), "profile": "profile.yaml", "listen": f"127.0.0.1:{free_port()}",
        "policy": "coserve", "features": {"online_probabilities": True},
        "executors": [{"name": "cpu0", "kind": "cpu", "budget_bytes": 400 * MB}],
        "verdict_log": {"path": "logs/verdicts.sqlite", "usage_save_s": 0.05},
        **extra,
    }
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def serving(config: Path) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(config)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("serving "):
                break
        assert lines and lines[-1].startswith("serving "), "".join(lines) + (proc.stderr.read() if proc.stderr else "")
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_answered_verdicts_survive_kill_9_and_a_retry_gets_the_recorded_one(
    tiny_board: tuple[CoEDefinition, Path], tmp_path: Path
) -> None:
    coe, repo = tiny_board
    config = write_config(tmp_path, coe, repo)
    listen = yaml.safe_load(config.read_text())["listen"]
    board = list(BoardSource(coe, seed=3, defect_share=0.2).requests(None, order="board", encoding="png"))
    requests = [InspectRequest("B-1", str(r.request_id), r.component_type, r.image) for r in board]
    answered: dict[str, Verdict] = {}

    with serving(config) as (proc, lines):
        assert any("verdict log:" in line for line in lines)
        with SyncInspectionClient(listen, timeout=60) as client:
            for item in client.inspect_board(requests):
                if not isinstance(item, BoardSummary):
                    answered[item.component_id] = item
            proc.send_signal(signal.SIGKILL)  # at once: nothing gets a chance to flush
        assert proc.wait(timeout=10) == -signal.SIGKILL

    assert len(answered) == len(requests) and all(v.outcome != "error" for v in answered.values())
    log = open_read_only(tmp_path / "logs" / "verdicts.sqlite")
    try:
        records = {r.verdict.component_id: r for r in log.records("B-1")}
        saved_usage = log.load_usage(coe.name)
    finally:
        log.close()
    assert set(records) == set(answered)  # none lost
    for cid, v in answered.items():
        r = records[cid]
        assert (r.verdict.outcome, r.verdict.defect_class, r.verdict.component_type) == (
            v.outcome, v.defect_class, v.component_type)
        assert [(e.expert, e.version) for e in r.experts] == [(e.expert, e.version) for e in v.experts]
        for e in r.experts:
            model = repo / e.expert / e.version / "model.onnx"
            assert e.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert saved_usage is not None and saved_usage["requests"] > 0  # learned mix saved while serving

    retried = requests[0]
    new = InspectRequest("B-1", "new-component", retried.component_type, retried.image)
    with serving(config) as (proc, lines):
        assert any("usage probabilities: restored" in line for line in lines), "".join(lines)
        with SyncInspectionClient(listen, timeout=60) as client:
            again = client.inspect(retried)
            fresh = client.inspect(new)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    first = answered[retried.component_id]
    assert again == first  # the recorded verdict, its times included: not inspected twice
    assert fresh.outcome != "error" and fresh.component_id == "new-component"

    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "verdicts", "--board", "B-1",
                          "--config", str(config), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert len(shown) == len(requests) + 1  # the retry was not logged again; the new one was
    assert shown[-1]["component_id"] == "new-component" and shown[-1]["experts"][0]["sha256"]


def _wait_for(what: object, want: object, timeout_s: float = 10.0) -> object:
    deadline = time.monotonic() + timeout_s
    got = None
    while time.monotonic() < deadline:
        got = what() if callable(what) else what
        if got == want:
            return got
        time.sleep(0.05)
    return got


def test_a_log_that_cannot_grow_refuses_work_and_serves_again_once_it_can(
    tiny_board: tuple[CoEDefinition, Path], tmp_path: Path
) -> None:
    coe, repo = tiny_board
    metrics = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path, coe, repo, metrics={"listen": metrics})
    data = yaml.safe_load(config.read_text())
    data["verdict_log"]["probe_every_s"] = 0.3
    config.write_text(yaml.safe_dump(data))
    listen, log = data["listen"], tmp_path / "logs" / "verdicts.sqlite"
    board = list(BoardSource(coe, seed=4, defect_share=0.2).requests(None, order="board", encoding="png"))
    requests = [InspectRequest("B-2", str(r.request_id), r.component_type, r.image) for r in board]

    def scrape() -> str:
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    answered: list[str] = []
    with serving(config) as (proc, _), SyncInspectionClient(listen, timeout=60) as client:
        for r in requests[:3]:
            answered.append(client.inspect(r).component_id)
        limit = max(os.stat(log).st_size, os.stat(f"{log}-wal").st_size)
        # the log's files cannot grow (the soft limit only: raising a hard limit needs a capability)
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        refused = None
        for r in requests[3:]:
            try:
                answered.append(client.inspect(r).component_id)
            except RemoteNotServing as exc:
                refused = exc
                break
        assert refused is not None and refused.status == "UNAVAILABLE", answered
        assert str(log) in refused.details and "unwritable" in refused.details
        assert _wait_for(client.health, "NOT_SERVING") == "NOT_SERVING"
        assert any("verdict log" in n and "unwritable" in n for n in client.status().notes)
        assert "coserve_verdict_log_healthy 0.0" in scrape()
        with pytest.raises(RemoteNotServing, match="new work is refused"):  # refused before inspecting
            client.inspect(requests[-1])
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        assert _wait_for(client.health, "SERVING") == "SERVING"
        assert "coserve_verdict_log_healthy 1.0" in scrape()
        answered.append(client.inspect(requests[-1]).component_id)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    reader = open_read_only(log)
    try:
        logged = [r.verdict.component_id for r in reader.records("B-2")]
    finally:
        reader.close()
    assert logged == answered  # every answered verdict is recorded; the refused ones are not
