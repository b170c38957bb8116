"""The watchdog: its pure recovery policy, and the engine's restart path on the fake backend.

The fake "server" is restarted by a ``ServerControl`` written here: a restart clears what the fake
backend has loaded on it and makes it reachable again, so the engine must put the resident set
back before a retried batch can run (the fake backend records an inference on an expert that is
not loaded as a violation). Real faults on the real server: tests/integration/test_self_healing.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from orchestrator.engine.engine import Engine
from orchestrator.engine.fake_backend import FakeBackend
from orchestrator.engine.types import BackendUnavailable
from orchestrator.engine.watchdog import Action, Fault, RecoveryPolicy, RestartBudget, classify, decide
from orchestrator.errors import (
    InferenceError,
    ModelLoadError,
    ModelUnloadTimeoutError,
    ServerUnavailableError,
)
from tests.unit.core.factories import make_coe, make_profile
from tests.unit.engine.test_engine import config, make_engine, request
from tests.unit.engine.virtual_time import run_virtual

POLICY = RecoveryPolicy(attempts=3, max_restarts=2, restart_window_s=60.0)


@pytest.mark.parametrize(
    ("exc", "restarted", "fault"),
    [
        (InferenceError("inference on 'a' failed", "Stub process 'a_0_0' is not healthy."), False, Fault.MODEL_PROCESS_DIED),
        (ServerUnavailableError("Triton server at x is not reachable"), False, Fault.SERVER_LOST),
        (InferenceError("inference on 'a' failed", "Socket closed"), True, Fault.SERVER_LOST),
        (ModelLoadError("cannot load 'a': its model process died during the load (pid 7); Triton keeps the model "
                        "LOADING for good (only a server restart frees the name)"), False, Fault.LOAD_WEDGED),
        (ModelLoadError("cannot load 'a'", "not ready within its 5.0 s deadline although the server answers"),
         False, Fault.LOAD_WEDGED),
        (ModelUnloadTimeoutError("model 'a' not gone 30.0 s after unload (index state UNLOADING)"), False,
         Fault.UNLOAD_STUCK),
        (ModelLoadError("cannot load 'a'", "INVALID_PROTOBUF"), False, Fault.OTHER),
        (InferenceError("inference on 'a' failed", "bad input shape"), False, Fault.OTHER),
    ],
)
def test_classify(exc: Exception, restarted: bool, fault: Fault) -> None:
    assert classify(exc, restarted_meanwhile=restarted) is fault


def test_decide_reloads_restarts_only_what_it_can_and_gives_up_after_the_attempts() -> None:
    assert decide(Fault.MODEL_PROCESS_DIED, 1, restartable=False, policy=POLICY).action is Action.RELOAD
    assert decide(Fault.SERVER_LOST, 1, restartable=True, policy=POLICY).action is Action.RESTART
    assert decide(Fault.LOAD_WEDGED, 2, restartable=True, policy=POLICY).action is Action.RESTART
    external = decide(Fault.SERVER_LOST, 1, restartable=False, policy=POLICY)
    assert external.action is Action.FAIL and "did not start this server" in external.reason
    assert decide(Fault.OTHER, 1, restartable=True, policy=POLICY).action is Action.FAIL
    last = decide(Fault.MODEL_PROCESS_DIED, 3, restartable=True, policy=POLICY)
    assert last.action is Action.FAIL and "after 3 attempts" in last.reason


def test_restart_budget_is_per_window() -> None:
    budget = RestartBudget(POLICY)
    assert budget.allows(0.0)
    budget.spend(0.0)
    budget.spend(10.0)
    assert not budget.allows(59.0)
    assert budget.allows(61.0)  # the first restart has left the window


class FakeControl:
    """Restarts the fake server: what it had loaded is gone, it answers again."""

    def __init__(self, backend: Any, faults: Any, broken: bool = False) -> None:
        self.backend, self.faults, self.broken = backend, faults, broken
        self.restarts = 0
        self.dead: str | None = None  # what ``failure`` reports (the monitor's view)

    def restartable(self) -> Sequence[str]:
        return ["cpu0"]

    def failure(self, server: str) -> str | None:
        return self.dead

    async def restart(self, server: str) -> str:
        self.restarts += 1
        await asyncio.sleep(0.5)
        if self.broken:
            raise ServerUnavailableError("fake: it would not start")
        self.backend.loaded = {k for k in self.backend.loaded if k[0] != server}
        self.faults.unavailable = False
        self.dead = None
        return "killed by SIGKILL"


def test_a_lost_server_is_restarted_its_set_put_back_and_every_request_answered() -> None:
    engine, backend = make_engine(config())
    control = FakeControl(backend, backend.faults)
    # room for every expert: nothing is unloaded, so the retried batch needs the restored set
    engine, backend = make_engine(config(budget_mb=200), backend.faults, server_control=control)
    control.backend = backend
    seen_serving: list[bool] = []

    async def drive() -> list[Any]:
        await engine.start()
        first = await engine.inspect(request("t0", cid="before"))
        resident_before = set(engine.core.pool("cpu0").resident())
        backend.faults.unavailable = True  # the server dies: every call fails until a restart
        jobs = [asyncio.ensure_future(engine.inspect(request("t0", cid=str(i)))) for i in range(6)]
        for _ in range(1000):  # virtual seconds: bounded, so a health that never drops fails
            if not engine.serving():
                break
            await asyncio.sleep(0.01)
        seen_serving.append(engine.serving())
        verdicts = await asyncio.gather(*jobs)
        seen_serving.append(engine.serving())
        assert set(engine.core.pool("cpu0").resident()) == resident_before  # the accounting did not move
        await engine.close()
        return [first, *verdicts]

    verdicts = run_virtual(drive())
    assert [v.component_id for v in verdicts] == ["before", *map(str, range(6))]  # each exactly once
    assert all(v.outcome == "pass" and v.error is None for v in verdicts)
    assert control.restarts == 1 and engine.stats.restarts == 1 and engine.stats.recoveries == 1
    assert engine.stats.restore_loads == len(engine.core.pool("cpu0").resident()) >= 1
    assert seen_serving == [False, True]  # NOT_SERVING during the restart, SERVING after it
    assert backend.violations == []  # no inference on an expert that was not put back
    [record] = engine.watchdog.records
    assert record.action == "restart" and record.ok and record.seconds >= 0.5


def test_the_monitor_restarts_a_dead_idle_server() -> None:
    engine, backend = make_engine(config())
    control = FakeControl(backend, backend.faults)
    engine, backend = make_engine(config(), backend.faults, server_control=control)
    control.backend = backend

    async def drive() -> Any:
        await engine.start()
        control.dead = "tritonserver had died before it was stopped (killed by SIGKILL)"
        await asyncio.sleep(1.0)
        verdict = await engine.inspect(request("t1"))
        await engine.close()
        return verdict

    verdict = run_virtual(drive())
    assert control.restarts == 1 and verdict.outcome == "pass"
    assert "killed by SIGKILL" in engine.watchdog.records[0].why


def test_a_server_that_will_not_restart_is_lost_with_a_precise_error() -> None:
    engine, backend = make_engine(config())
    control = FakeControl(backend, backend.faults, broken=True)
    engine, backend = make_engine(config(), backend.faults, server_control=control)

    async def drive() -> None:
        await engine.start()
        backend.faults.unavailable = True
        await engine.inspect(request("t2"))

    with pytest.raises(BackendUnavailable, match="restarting it failed: .*would not start"):
        run_virtual(drive())
    assert control.restarts == 1  # the failed restart is not retried in a loop by each waiter


def test_a_dead_model_process_that_stays_dead_gives_up_after_the_attempts() -> None:
    from orchestrator.engine.fake_backend import Faults

    engine, backend = make_engine(config(), Faults(dead_process_infers={"cls_0": 9}))

    async def drive() -> Any:
        await engine.start()
        return await engine.inspect(request("t0", 0.9))

    verdict = run_virtual(drive())
    assert verdict.outcome == "error" and "not healthy" in (verdict.error or "")
    assert "gave up after 3 attempts" in (verdict.error or "")
    assert engine.stats.reloads == 2  # infer, reload, infer, reload, infer


def test_restarts_are_single_flight() -> None:
    """Every operation cut off by one server failure waits for the same restart."""
    engine, backend = make_engine(config())
    control = FakeControl(backend, backend.faults)
    engine, backend = make_engine(config(), backend.faults, server_control=control)
    control.backend = backend

    async def drive() -> list[bool]:
        await engine.start()
        results = await asyncio.gather(*(engine.watchdog.restart("cpu0", f"caller {i}") for i in range(3)))
        await engine.close()
        return list(results)

    assert run_virtual(drive()) == [True, True, True]
    assert control.restarts == 1 and len(engine.watchdog.records) == 1


def test_an_unload_stuck_until_a_restart_is_done_by_the_restart() -> None:
    """An unload that never finishes (Triton leaves the model UNLOADING) restarts the server; the
    expert is not put back, so the core is told the unload is done only once the server (and so
    its memory) is gone; the next requests are served."""
    stuck = [1]

    class StuckUnloads(FakeBackend):
        async def unload(self, executor: str, expert: str) -> None:
            if stuck[0] > 0:
                stuck[0] -= 1
                raise ModelUnloadTimeoutError(f"model {expert!r} not gone 30.0 s after unload (index state UNLOADING)")
            await super().unload(executor, expert)

    coe, profile = make_coe(), make_profile()
    backend = StuckUnloads(coe, profile, {"cpu0": "cpu"})
    control = FakeControl(backend, backend.faults)
    engine = Engine(coe, config(), profile, backend, server_control=control)

    async def drive() -> list[Any]:
        await engine.start()
        # forces unloads; bounded (virtual seconds): an unload left counted would stall the rest
        verdicts = [await asyncio.wait_for(engine.inspect(request(f"t{i}", cid=str(i))), 120) for i in range(4)]
        await engine.close()
        return verdicts

    verdicts = run_virtual(drive())
    assert all(v.outcome == "pass" for v in verdicts)
    assert stuck == [0] and control.restarts == 1
    assert engine.stats.unload_failures == 0 and engine.unload_errors == []
    assert backend.violations == []
    for ex in engine.status().executors:
        assert ex.used_bytes <= ex.budget_bytes
