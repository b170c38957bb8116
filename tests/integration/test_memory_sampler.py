"""The memory sampler on a real embedded tritonserver: at every load and unload its figure for
the executor matches a direct PSS read (the server's growth over idle plus its model processes'
PSS), and it follows a server the watchdog's restart replaced (new pid, idle PSS read again)."""

from __future__ import annotations

import asyncio
from typing import Any

from orchestrator.engine.memory_sampler import MemorySampler
from orchestrator.triton import processes
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton

MB = 1 << 20


def direct(server_pid: int, idle: int) -> int:
    growth = max(0, processes.memory(server_pid).pss_bytes - idle)
    return growth + sum(p.pss_bytes for p in processes.model_processes(server_pid))


def close_enough(got: int, want: int, slack: int) -> bool:
    return abs(got - want) <= slack + 0.03 * want


#: At a load or an unload the sampler reads the new model process's PSS but only the statm
#: estimate of the processes it knew (their PSS at every event would cost more than the 5% of a
#: core allowed, module doc). A process's PSS changes as others come and go that share its
#: libraries (ONNX Runtime, Python), so right after an event the known processes read high (a
#: new sharer came) or low (one left) by their share of those libraries until the next full
#: refresh (5 s) re-reads them: measured +10 MB after a load and -13.5 MB after an unload here
#: (two model processes). Missing the new process (~40 MB) or counting a gone one is still caught.
EVENT_SLACK = 16 * MB
#: after a full refresh (every process's PSS read again) the figure is exact but for the server's
#: statm estimate (~0.1 MB a model): a server's growth left out (~6 MB) is caught here
REFRESHED_SLACK = 2 * MB


def check(sampler: MemorySampler, executor: str, pid: int, event: str, models: int) -> int:
    sampler.poke(event, executor, "")
    fp = sampler.sync(10.0)
    assert fp is not None
    want = direct(pid, sampler.report().idle_bytes[executor])
    got = fp.executor_bytes(executor)
    assert fp.model_processes[executor] == models, (event, fp)
    assert close_enough(got, want, EVENT_SLACK), (event, got, want)
    sampler.reset_window()  # a window starts with a full PSS reading of every process
    fp = sampler.sync(10.0)
    assert fp is not None
    want = direct(pid, sampler.report().idle_bytes[executor])
    assert close_enough(fp.executor_bytes(executor), want, REFRESHED_SLACK), (event, "refreshed", fp, want)
    return got


def test_at_every_load_and_unload_the_sampler_matches_a_direct_pss_read(
    triton: EmbeddedTriton, arun: Any, unload_all: None
) -> None:
    # Kills: a poke that misses the new model process (figure short by its ~40 MB), an unload
    # whose gone process stays counted, a server growth left out or read from a stale pid.
    pid = triton.pid
    assert pid is not None

    async def body(adapter: TritonAdapter) -> None:
        ready = [e.name for e in await adapter.index() if e.state == "READY"]
        assert not ready, f"the session server must be idle here, holds {ready}"
        with MemorySampler({"cpu0": lambda: triton.pid}) as sampler:
            figures = []
            for n, name in enumerate(("cls_a", "cls_b"), start=1):
                await adapter.load(name)
                figures.append(check(sampler, "cpu0", pid, "load", n))
            assert figures[1] > figures[0] + 10 * MB  # a second model process counted
            for n, name in enumerate(("cls_a", "cls_b"), start=1):
                await adapter.unload(name)
                check(sampler, "cpu0", pid, "unload", 2 - n)
            report = sampler.report()
            assert report.lifetime_peak_bytes["cpu0"] >= figures[1] - 2 * MB
            assert report.restarts == {} and report.max_gap_s < 1.0

    arun(body)


def test_the_sampler_follows_a_restarted_server(triton_repo: Any) -> None:
    # Kills: a sampler that keeps the pid it was given (after the restart it reads the dead
    # server: the new model process is never found), an idle figure not read again.
    server = EmbeddedTriton(triton_repo, start_timeout_s=60)
    server.start()

    async def main() -> None:
        adapter = TritonAdapter(server.grpc_url, process_probe=server.process_probe())
        try:
            with MemorySampler({"cpu0": lambda: server.pid}) as sampler:
                await adapter.load("cls_a")
                old_pid = server.pid
                assert old_pid is not None
                before = check(sampler, "cpu0", old_pid, "load", 1)
                await server.restart()  # what the watchdog's restart does to an embedded server
                await adapter.reconnect(server.grpc_url)
                sampler.restarted("cpu0")  # the hook: ready, nothing loaded yet
                new_pid = server.pid
                assert new_pid is not None and new_pid != old_pid
                fp = await asyncio.to_thread(sampler.sync, 10.0)
                report = sampler.report()
                assert fp is not None and fp.model_processes["cpu0"] == 0
                assert fp.executor_bytes("cpu0") <= 2 * MB
                assert report.restarts == {"cpu0": 1} and not report.idle_guessed
                assert abs(report.idle_bytes["cpu0"] - processes.memory(new_pid).pss_bytes) <= 2 * MB
                await adapter.load("cls_a")
                after = check(sampler, "cpu0", new_pid, "load", 1)
                assert abs(after - before) <= 5 * MB + 0.1 * before  # the same model again
                assert sampler.report().lifetime_peak_bytes["cpu0"] >= before
                await adapter.unload("cls_a")
                check(sampler, "cpu0", new_pid, "unload", 0)
        finally:
            await adapter.close()

    try:
        asyncio.run(main())
    finally:
        server.stop()
