"""The embedded tritonserver launcher: start, process inspection, clean stop, start errors."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from orchestrator.errors import ServerStartError
from orchestrator.triton import processes
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton
from orchestrator.triton.model_config import ModelConfig
from tests.integration import factories

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    factories.write_model(repo, "solo", factories.make_classifier_onnx(seed=7))
    return repo


def test_stop_leaves_no_processes_shm_regions_or_home(small_repo):
    server = EmbeddedTriton(small_repo)
    with server:
        assert server.start_seconds is not None and server.start_seconds < 30
        home = server.home
        assert home is not None and (home / "backends" / "coserve_ort" / "model.py").is_file()
        assert (home / "backends" / "python" / processes.STUB_NAME).is_file()

        async def load() -> None:
            adapter = TritonAdapter(server.grpc_url, process_probe=server.process_probe())
            try:
                config = ModelConfig.read(small_repo / "solo").with_instances("cpu", 2)
                await adapter.load("solo", config)
                await adapter.infer("solo", {factories.INPUT: factories.images(1)})
            finally:
                await adapter.close()

        asyncio.run(load())
        server_pid = server.pid
        stubs = server.model_processes()
        assert [p.model for p in stubs] == ["solo", "solo"]
        assert sorted(p.instance for p in stubs) == ["solo_0_0", "solo_0_1"]
        # The stubs are tritonserver's children; each has its own /dev/shm region with our prefix.
        assert all(processes.parent_pid(p.pid) == server_pid for p in stubs)
        assert sorted(p.shm_region for p in stubs) == server.shm_regions()
        # Memory is read from smaps_rollup: PSS never exceeds RSS, and a loaded stub is tens of MB.
        for p in stubs:
            assert p.rss_bytes > 10 * 2**20 and 0 < p.pss_bytes <= p.rss_bytes
        mem = server.server_memory()
        assert mem.pid == server_pid and 0 < mem.pss_bytes <= mem.rss_bytes
    assert not server.running() and server.pid is None
    assert not processes.is_alive(server_pid)
    assert all(not processes.is_alive(p.pid) for p in stubs)
    assert server.shm_regions() == []
    assert all(not Path("/dev/shm", p.shm_region).exists() for p in stubs)
    assert not home.exists()  # a temporary home is removed
    server.stop()  # idempotent


def test_stop_removes_shm_regions_of_killed_model_processes(small_repo, tmp_path):
    """A stub killed with SIGKILL cannot remove its region; stop() does (only this server's)."""
    import os
    import signal

    home = tmp_path / "home"
    with EmbeddedTriton(small_repo, home=home) as server:

        async def load() -> None:
            adapter = TritonAdapter(server.grpc_url)
            try:
                await adapter.load("solo")
            finally:
                await adapter.close()

        asyncio.run(load())
        [stub] = server.model_processes("solo")
        os.kill(stub.pid, signal.SIGKILL)
        assert server.shm_regions() == [stub.shm_region]
    assert server.shm_regions() == []
    assert (home / "tritonserver.log").is_file()  # a given home (and its log) is kept


def test_missing_binary_is_a_clear_start_error(small_repo, tmp_path):
    server = EmbeddedTriton(small_repo, binary=tmp_path / "nowhere" / "tritonserver")
    with pytest.raises(ServerStartError, match="tritonserver binary not found at .*nowhere"):
        server.start()
    assert not server.running()


def test_missing_repository_is_a_clear_start_error(tmp_path):
    with pytest.raises(ServerStartError, match="not a directory"):
        EmbeddedTriton(tmp_path / "no_repo").start()


@pytest.mark.parametrize("which", ["grpc_port", "http_port", "metrics_port"])
def test_a_port_in_use_is_named_before_anything_starts(small_repo, which):
    """Before: an HTTP port held by another server answered the readiness probe ("ready"), then
    "exited unexpectedly"; a held gRPC port gave only Triton's log tail."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmbeddedTriton(small_repo, **{which: port})
        with pytest.raises(ServerStartError, match=f"port {port} on 127.0.0.1 is already in use"):
            server.start()
    assert not server.running() and server.home is None


def test_failed_start_reports_the_log_tail_and_leaves_nothing_running(small_repo, tmp_path):
    failing = tmp_path / "tritonserver"
    failing.write_text("#!/bin/sh\necho 'error: the server could not start (test)'\nexit 3\n")
    failing.chmod(0o755)
    server = EmbeddedTriton(small_repo, binary=failing)
    with pytest.raises(ServerStartError) as info:
        server.start()
    assert "exited with code 3" in str(info.value)
    assert "could not start (test)" in str(info.value)  # the server's own words, from the log tail
    assert not server.running() and server.home is None


def test_crashed_model_process_is_reported_and_recovered(small_repo):
    """Triton keeps a model whose process died READY and every request fails.

    ``reload`` recovers it (a plain load with the same config is a no-op in Triton); an unload of
    it returns at once (its memory is already free; before, it waited out its whole timeout).
    """
    import os
    import signal
    import time

    from orchestrator.errors import InferenceError
    from orchestrator.triton.adapter import model_process_died

    with EmbeddedTriton(small_repo, drain_timeout_s=1) as server:

        async def kill_and_fail(adapter: TritonAdapter) -> None:
            [stub] = server.model_processes("solo")
            os.kill(stub.pid, signal.SIGKILL)
            with pytest.raises(InferenceError) as failed:
                for _ in range(100):  # the server notices on the next request
                    await adapter.infer("solo", {factories.INPUT: factories.images(1)})
                    await asyncio.sleep(0.05)
            assert "is not healthy" in (failed.value.server_message or "")
            assert model_process_died(failed.value)

        async def body() -> None:
            adapter = TritonAdapter(server.grpc_url, process_probe=server.process_probe())
            config = ModelConfig.read(small_repo / "solo")
            try:
                await adapter.load("solo", config)
                await kill_and_fail(adapter)
                await adapter.load("solo", config)  # same config: Triton does nothing
                with pytest.raises(InferenceError):
                    await adapter.infer("solo", {factories.INPUT: factories.images(1)})
                await adapter.reload("solo", config)
                out = await adapter.infer("solo", {factories.INPUT: factories.images(1)})
                assert out[factories.OUTPUT].shape == (1, factories.CLASSES)
                assert len(server.model_processes("solo")) == 1

                await kill_and_fail(adapter)
                began = time.perf_counter()
                result = await adapter.unload("solo", timeout_s=20)
                assert result.index_stuck and time.perf_counter() - began < 1.0
                await adapter.load("solo", config)  # a fresh load after it replaces the stuck one
                out = await adapter.infer("solo", {factories.INPUT: factories.images(1)})
                assert out[factories.OUTPUT].shape == (1, factories.CLASSES)
            finally:
                await adapter.close()

        asyncio.run(body())
    assert server.shm_regions() == []


def test_orphan_model_processes_of_a_dead_server_are_ended(tmp_path):
    """A stub whose server died holding their shared health mutex blocks on it for good (seen after a
    SIGKILL mid-board: a stub alive 10 minutes later, parent pid 1); with no server left to take that
    mutex, the next start (``remove_stale``) ends it, and ``stop()`` ends its own server's."""
    import shutil as _shutil
    import subprocess as _subprocess

    from orchestrator.triton.launcher import COSERVE_SHM_PREFIX, remove_stale

    fake_stub = tmp_path / processes.STUB_NAME  # a stand-in with a stub's name and command line
    _shutil.copy(_shutil.which("tail") or "/usr/bin/tail", fake_stub)  # `tail -F` waits on missing files
    args = ["1", "1", "1", "d", "h", "i", "m"]
    quiet = {"stderr": _subprocess.DEVNULL, "cwd": tmp_path}
    region = f"{COSERVE_SHM_PREFIX}deadbeef0001_x"
    orphan = _subprocess.Popen([str(fake_stub), "-F", region, *args], **quiet)
    living = f"{COSERVE_SHM_PREFIX}cafe00000001_x"  # named by a "server" that still lives
    server = _subprocess.Popen(["bash", "-c", f"exec -a tritonserver tail -F x{living}"], **quiet)
    kept = _subprocess.Popen([str(fake_stub), "-F", living, *args], **quiet)
    try:
        time.sleep(0.2)
        removed = remove_stale(tmp_path)
        assert f"orphan stub {orphan.pid}" in removed
        assert orphan.wait(timeout=5) == -9
        assert kept.poll() is None  # its server is alive: never killed
    finally:
        for p in (orphan, server, kept):
            if p.poll() is None:
                p.kill()
                p.wait()
