"""``TritonAdapter._call``, the liveness watch around every Triton call, without a server.

The call is awaited in the caller's task and the watch starts only after ``probe_interval_s``
(orchestrator/triton/adapter.py): a call that answers in time must cost no task, no probe and no
timer left behind; one that hangs while probes go unanswered must fail with
``ServerUnavailableError`` (and the adapter remember it); a restart meanwhile must fail it as cut
off; a cancellation by the caller must stay a cancellation. The real frozen-server cases run in
tests/integration (test_faults, test_self_healing).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestrator.errors import ServerUnavailableError
from orchestrator.triton.adapter import TritonAdapter


def adapter(probes: list[bool], *, interval: float = 0.01, after: float = 0.05) -> TritonAdapter:
    """An adapter whose liveness probes answer ``probes`` in turn (the last one from then on),
    recording each probe in ``adapter.probed``."""
    a = TritonAdapter("127.0.0.1:1", probe_interval_s=interval, unresponsive_after_s=after)
    a.probed = []  # type: ignore[attr-defined]

    async def probe_live() -> bool:
        a.probed.append(asyncio.get_running_loop().time())  # type: ignore[attr-defined]
        return probes[min(len(a.probed), len(probes)) - 1]  # type: ignore[attr-defined]

    a._probe_live = probe_live  # type: ignore[method-assign]
    return a


async def answer(value: Any, after_s: float = 0.0) -> Any:
    if after_s:
        await asyncio.sleep(after_s)
    return value


def test_a_prompt_answer_costs_no_task_no_probe_and_leaves_no_timer() -> None:
    async def main() -> None:
        a = adapter([False], interval=0.05)
        loop = asyncio.get_running_loop()
        before = asyncio.all_tasks()
        seen: list[set[asyncio.Task[Any]]] = []

        async def call() -> str:
            seen.append(asyncio.all_tasks() - before)  # what runs while the call is pending
            return "ok"

        assert await a._call(call()) == "ok"
        assert seen == [set()]  # the call ran in this task: no task was made for it
        timers = list(loop._scheduled)  # type: ignore[attr-defined]
        assert all(t.cancelled() for t in timers)  # the watch's timer was taken back
        await asyncio.sleep(0.1)
        assert a.probed == []  # type: ignore[attr-defined]
        assert a.unresponsive is None

    asyncio.run(main())


def test_a_hanging_call_fails_once_probes_go_unanswered_and_is_remembered() -> None:
    async def main() -> None:
        a = adapter([False])
        began = asyncio.get_running_loop().time()
        with pytest.raises(ServerUnavailableError, match="stopped answering"):
            await a._call(answer("late", 10.0))
        took = asyncio.get_running_loop().time() - began
        assert 0.05 <= took < 1.0  # after unresponsive_after_s, not the call's own 10 s
        assert len(a.probed) >= 2  # type: ignore[attr-defined]
        assert a.unresponsive is not None and "stopped answering" in a.unresponsive
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]  # the watch's cancel was taken back

    asyncio.run(main())


def test_a_slow_call_of_a_server_that_answers_probes_is_left_to_finish() -> None:
    async def main() -> None:
        a = adapter([True])
        assert await a._call(answer("slow", 0.2)) == "slow"  # 4x unresponsive_after_s
        assert len(a.probed) >= 3  # type: ignore[attr-defined]
        assert a.unresponsive is None

    asyncio.run(main())


def test_a_restart_during_the_call_fails_it_as_cut_off() -> None:
    async def main() -> None:
        a = adapter([True])

        async def restart_soon() -> None:
            await asyncio.sleep(0.005)
            a.epoch += 1  # what reconnect does

        asyncio.get_running_loop().create_task(restart_soon())
        with pytest.raises(ServerUnavailableError, match="restarted during the call"):
            await a._call(answer("late", 10.0))

    asyncio.run(main())


def test_a_caller_that_gives_up_gets_a_cancellation_not_a_server_error() -> None:
    async def main() -> None:
        a = adapter([False])
        task = asyncio.ensure_future(a._call(answer("late", 10.0)))
        await asyncio.sleep(0.02)  # the watch has begun probing
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)
        assert a.unresponsive is None  # the watch stopped with the call: it judged nothing
        probes = len(a.probed)  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        assert len(a.probed) == probes  # type: ignore[attr-defined]  # and probes no more

    asyncio.run(main())
