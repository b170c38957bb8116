"""Fast release on the real embedded tritonserver: an unloaded expert's memory is back within 0.1 s.

The stock Python backend keeps an unloaded model's process for ~1.1 s (``sleep(1)`` in
``StubLauncher::UpdateHealth()``); the launcher's LD_PRELOAD shim makes that one call return at
once. These tests kill the mutations "shim not preloaded", "shim returns early for every caller"
(the server's own sleeps would spin) and "setting to turn it off ignored".
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import pytest

from orchestrator.triton import processes
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import (
    UNLOAD_MODE_FAST,
    UNLOAD_MODE_STOCK,
    EmbeddedTriton,
    build_fast_release,
)
from orchestrator.triton.model_config import ModelConfig
from tests.integration import factories

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for i in range(2):
        factories.write_model(repo, f"fr_{i}", factories.make_classifier_onnx(seed=i))
    return repo


async def _cycles(server: EmbeddedTriton, repo: Path, n: int, count: int = 1) -> list[float]:
    adapter = TritonAdapter(server.grpc_url, process_probe=server.process_probe(), poll_interval_s=0.005)
    gone = []
    try:
        for i in range(n):
            name = f"fr_{i % 2}"
            await adapter.load(name, ModelConfig.read(repo / name).with_instances("cpu", count))
            out = await adapter.infer(name, {factories.INPUT: factories.images(2, seed=i)})
            assert out[factories.OUTPUT].shape == (2, factories.CLASSES)
            result = await adapter.unload(name)
            assert result.processes_confirmed and server.model_processes(name) == []
            gone.append(result.gone_seconds)
    finally:
        await adapter.close()
    return gone


def test_fast_release_is_the_default_and_frees_memory_within_100_ms_cycle_after_cycle(repo: Path) -> None:
    shim, problem = build_fast_release()
    if shim is None:
        pytest.skip(f"fast release unavailable here: {problem}")
    with EmbeddedTriton(repo) as server:
        assert server.unload_mode == UNLOAD_MODE_FAST and server.fast_release_problem is None
        assert "LD_PRELOAD" in server.environment() and server.environment()["LD_PRELOAD"].endswith(".so")
        gone = asyncio.run(_cycles(server, repo, 60))
        gone += asyncio.run(_cycles(server, repo, 4, count=2))  # two instances end one after another
        assert server.running()
        server_pid = server.pid
        assert server_pid is not None and processes.children(server_pid) == []
        assert server.shm_regions() == []  # Triton's kill of the stub leaves no region behind
        log = server.log_tail(2000)
    assert statistics.median(gone) < 0.1, gone
    assert max(gone) < 0.3, gone
    assert "not healthy" not in log and "failed to unload" not in log.lower()


def test_fast_release_can_be_turned_off(repo: Path) -> None:
    with EmbeddedTriton(repo, fast_release=False) as server:
        assert server.unload_mode == UNLOAD_MODE_STOCK and "LD_PRELOAD" not in server.environment()
        gone = asyncio.run(_cycles(server, repo, 2))
    assert min(gone) > 0.8  # the stock backend's 1 s sleep is still there
