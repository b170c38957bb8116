"""The engine on the profile-timed fake backend, on a virtual clock.

The central test: the engine and the simulator are two drivers of one core, so the same workload
gives the same sequence of decisions through both (a difference is a bug in a driver). The rest
covers the protocol: verdicts from outputs, the subsequent step only when the classifier calls for
it, faults (dead model process reloaded once, failed loads and inferences, lost server), bounds
(queue, deadline) and input checks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from orchestrator.core.decisions import Decision, Dispatch, Load
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.engine.engine import Engine
from orchestrator.engine.fake_backend import FakeBackend, Faults
from orchestrator.engine.types import (
    BackendUnavailable,
    BadRequest,
    DeadlinePassed,
    InspectRequest,
    QueueFull,
)
from orchestrator.simulate.engine import Simulation
from orchestrator.simulate.workload import workload_from_coe
from tests.unit.core.factories import MB, make_coe, make_profile
from tests.unit.engine.virtual_time import run_virtual

SHAPE = (3, 64, 64)


def image(mean: float) -> np.ndarray:
    """The fake experts' verdict is a function of the image mean (fake_backend module doc)."""
    return np.full(SHAPE, mean, dtype=np.float32)


def config(budget_mb: float = 25, executors: int = 1, policy: str = "coserve") -> ServeConfig:
    return ServeConfig(
        tuple(ExecutorConfig(f"cpu{i}", "cpu", int(budget_mb * MB)) for i in range(executors)), policy=policy
    )


def make_engine(cfg: ServeConfig, faults: Faults | None = None, **kw: Any) -> tuple[Engine, FakeBackend]:
    coe, profile = make_coe(), make_profile()
    backend = FakeBackend(coe, profile, {e.name: e.kind for e in cfg.executors}, faults)
    return Engine(coe, cfg, profile, backend, **kw), backend


def request(ctype: str, mean: float = 0.1, cid: str = "c", **kw: Any) -> InspectRequest:
    return InspectRequest("board", cid, ctype, image(mean), **kw)


def _decision_key(d: Decision) -> tuple[Any, ...]:
    # batch ids are the core's own counters; everything else must match
    return (type(d).__name__, *(v for k, v in vars(d).items() if k != "batch_id"))


@pytest.mark.parametrize("policy", ["coserve", "samba-lru", "em-ra"])
@pytest.mark.parametrize("executors", [1, 2])
def test_engine_and_simulator_take_the_same_decisions(policy: str, executors: int) -> None:
    coe, profile = make_coe(), make_profile()
    cfg = config(budget_mb=25, executors=executors, policy=policy)
    wl = workload_from_coe(coe, profile, requests=60, interval_s=0.013, seed=3, source="unit")

    sim = Simulation(wl, cfg, profile, warmup_tasks=0)
    sim_decisions: list[Decision] = []
    execute = sim._execute

    def record(decisions: list[Decision]) -> None:
        sim_decisions.extend(decisions)
        execute(decisions)

    sim._execute = record  # type: ignore[method-assign]
    sim.run()

    engine, backend = make_engine(cfg)

    async def drive() -> list[Any]:
        await engine.start(wait=False)
        loop = asyncio.get_running_loop()
        tasks = []
        for r in wl.requests:
            await asyncio.sleep(max(0.0, r.arrival_s - engine.now()))
            # the image makes the fake classifier say what the workload drew for this request
            mean = 0.1 if (wl.verdicts.get(r.id) or coe.routing[wl.request_types[r.id]].detector is None) else 0.9
            tasks.append(loop.create_task(engine.inspect(request(wl.request_types[r.id], mean, cid=str(r.id)))))
        return await asyncio.gather(*tasks)

    verdicts = run_virtual(drive())
    assert len(verdicts) == len(wl.requests)
    assert backend.violations == []
    assert [_decision_key(d) for d in engine.decisions] == [_decision_key(d) for d in sim_decisions]


def test_verdicts_follow_the_experts_outputs_and_the_detector_runs_only_when_called_for() -> None:
    engine, backend = make_engine(config())
    coe = engine.coe
    with_detector = next(t for t, r in coe.routing.items() if r.detector)
    without = next(t for t, r in coe.routing.items() if not r.detector)

    async def drive() -> list[Any]:
        await engine.start()
        return await asyncio.gather(
            engine.inspect(request(with_detector, 0.1, "ok")),  # no defect -> detector passes it
            engine.inspect(request(with_detector, 0.3, "misaligned")),  # no defect -> detector fails it
            engine.inspect(request(with_detector, 0.9, "defect")),  # defect: the detector never sees it
            engine.inspect(request(without, 0.1, "plain")),
        )

    ok, misaligned, defect, plain = run_virtual(drive())
    det = coe.routing[with_detector].detector
    assert (ok.outcome, [e.expert for e in ok.experts]) == ("pass", [coe.routing[with_detector].classifier, det])
    assert misaligned.outcome == "fail"
    assert defect.outcome == "defect" and defect.defect_class == 1 and len(defect.experts) == 1
    assert plain.outcome == "pass" and len(plain.experts) == 1
    assert abs(sum(plain.scores) - 1.0) < 1e-6
    for v in (ok, misaligned, defect, plain):
        assert v.compute_s > 0 and v.queue_s >= 0 and v.switch_s >= 0
    detector_infers = [op for op in backend.log if op[0] == "infer" and op[2] == det]
    assert detector_infers  # ran, but only for the two that called for it (one batch here)
    assert backend.violations == []


def test_a_dead_model_process_is_reloaded_once_and_its_batch_retried() -> None:
    victim = "cls_0"
    engine, backend = make_engine(config(), Faults(dead_process_infers={victim: 1}))

    async def drive() -> Any:
        await engine.start()
        return await engine.inspect(request("t0", 0.9))

    verdict = run_virtual(drive())
    assert verdict.outcome == "defect" and verdict.error is None
    assert engine.stats.reloads == 1
    assert [op for op in backend.log if op[2] == victim].count(("infer", "cpu0", victim)) == 2


def test_an_expert_that_keeps_failing_gives_error_verdicts_and_the_rest_go_on() -> None:
    engine, _ = make_engine(config(), Faults(dead_process_infers={"cls_1": 5}, fail_loads={"cls_2": 9}))

    async def drive() -> list[Any]:
        await engine.start()
        return await asyncio.gather(
            engine.inspect(request("t1", cid="a")), engine.inspect(request("t2", cid="b")),
            engine.inspect(request("t3", cid="c")),
        )

    reloaded_but_dead, failed_load, fine = run_virtual(drive())
    assert reloaded_but_dead.outcome == "error" and "not healthy" in (reloaded_but_dead.error or "")
    assert failed_load.outcome == "error" and "failed to load" in (failed_load.error or "")
    assert fine.outcome == "pass" and fine.error is None


def test_a_lost_server_is_backend_unavailable() -> None:
    faults = Faults()
    engine, _ = make_engine(config(), faults)

    async def drive() -> None:
        await engine.start()
        faults.unavailable = True
        await engine.inspect(request("t5"))

    with pytest.raises(BackendUnavailable, match="not reachable"):
        run_virtual(drive())


def test_the_queue_is_bounded_and_deadlines_are_kept() -> None:
    engine, _ = make_engine(config(), queue_bound=2)

    async def drive() -> None:
        await engine.start()
        first = asyncio.ensure_future(engine.inspect(request("t4", cid="1")))
        second = asyncio.ensure_future(engine.inspect(request("t4", cid="2")))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="bound 2"):
            await engine.inspect(request("t4", cid="3"))
        await asyncio.gather(first, second)
        loop = asyncio.get_running_loop()
        with pytest.raises(DeadlinePassed):  # t5's expert must load (1 s) first: 0.1 s is too short
            await engine.inspect(request("t5", cid="4", deadline=loop.time() + 0.1))

    run_virtual(drive())


@pytest.mark.parametrize(
    ("req", "words"),
    [
        (InspectRequest("b", "c", "no_such_type", image(0.1)), "unknown component type 'no_such_type'"),
        (InspectRequest("b", "c", "t0", np.zeros((3, 8, 8), np.float32)), "float32 [3, 64, 64]"),
        (InspectRequest("b", "c", "t0", image(0.1).astype(np.float64)), "float64"),
        (InspectRequest("b", "c", "t0", b"not a png"), "cannot decode image"),
    ],
)
def test_bad_requests_are_refused_and_disturb_nothing(req: InspectRequest, words: str) -> None:
    engine, _ = make_engine(config())

    async def drive() -> Any:
        await engine.start()
        with pytest.raises(BadRequest, match=words.replace("[", r"\[").replace("]", r"\]")):
            await engine.inspect(req)
        return await engine.inspect(request("t0"))

    assert run_virtual(drive()).outcome == "pass"


def test_budget_is_never_exceeded_and_status_reports_it() -> None:
    engine, backend = make_engine(config(budget_mb=25))
    seen: list[int] = []

    async def drive() -> None:
        await engine.start()
        tasks = [asyncio.ensure_future(engine.inspect(request(f"t{i % 6}", cid=str(i)))) for i in range(40)]
        while not all(t.done() for t in tasks):
            seen.append(engine.status().executors[0].used_bytes)
            await asyncio.sleep(0.05)
        await asyncio.gather(*tasks)

    run_virtual(drive())
    status = engine.status()
    assert status.executors[0].budget_bytes == 25 * MB and max(seen) <= 25 * MB
    assert status.serving and status.queued == 0 and status.policy == "coserve"
    loads = [d for d in engine.decisions if isinstance(d, Load)]
    assert engine.stats.loads == len(loads) and backend.max_concurrent_loads <= 2
    assert engine.stats.switches == sum(d.tier == "disk" for d in loads) > 0  # what bench reports
    assert any(isinstance(d, Dispatch) for d in engine.decisions)


def test_three_boards_at_once_all_finish_and_none_starves() -> None:
    """Three production lines stream boards concurrently: a busy line (common types), a rare-type
    line and a mixed one, a component every 4 ms on each, far more than the box can do at once.
    Every board finishes, and each gets its first verdict before any board is finished: no line
    waits for another to be served out. (Under this overload the starvation guard makes every
    board later: 12.6 s without it, 20.7 s with a 3 s bound, as the simulator found on the paper's
    burst; it is for streams, not bursts. Deadline order: the next test.)"""
    engine, backend = make_engine(config(budget_mb=25))
    lines = {"busy": ["t0", "t1"] * 15, "rare": ["t5", "t4"] * 5, "mixed": [f"t{i % 6}" for i in range(18)]}
    done: dict[str, list[float]] = {name: [] for name in lines}

    async def board(name: str, types: list[str]) -> None:
        for i, ctype in enumerate(types):
            await asyncio.sleep(0.004)
            asyncio.ensure_future(engine.inspect(request(ctype, cid=f"{name}-{i}"))).add_done_callback(
                lambda _, name=name: done[name].append(engine.now())
            )

    async def drive() -> None:
        await engine.start()
        await asyncio.gather(*(board(n, t) for n, t in lines.items()))
        while sum(len(d) for d in done.values()) < sum(len(t) for t in lines.values()):
            await asyncio.sleep(0.05)

    run_virtual(drive())
    assert {n: len(d) for n, d in done.items()} == {n: len(t) for n, t in lines.items()}  # each finished
    first_finished = min(max(d) for d in done.values())
    assert all(min(d) < first_finished for d in done.values())
    assert backend.violations == []


def test_a_caller_that_goes_away_leaves_no_queued_work() -> None:
    """Cancelled inspections (a client that disconnected) are withdrawn from the core at once: no
    queue slot held, no expert loaded or run for them (mutation: no withdraw on cancel -> t5's
    expert is still loaded and run for nobody, and the queue stays full)."""
    engine, _ = make_engine(config(), queue_bound=4)

    async def drive() -> None:
        await engine.start()
        tasks = [asyncio.ensure_future(engine.inspect(request("t5", cid=str(i)))) for i in range(4)]
        await asyncio.sleep(0)
        assert engine.status().queued == 4
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert engine.status().queued == 0 and engine.core.queued_steps() == 0
        verdict = await engine.inspect(request("t0", cid="after"))  # the queue is free again
        assert verdict.outcome in ("pass", "defect")
        await asyncio.sleep(5)

    run_virtual(drive())
    assert not [d for d in engine.decisions if isinstance(d, Dispatch) and d.expert == "cls_5"]
    assert engine.core.stats.withdrawn == 4


def test_a_board_with_a_tight_deadline_is_served_first() -> None:
    """Three lines stream at once; the urgent line's components carry a deadline that arranged
    order would miss. Deadline order serves them ahead of the queue, so every one of them meets
    it, and the other boards still finish (mutation: no deadline order -> urgent components get
    DEADLINE_EXCEEDED)."""

    def run(tight: bool) -> tuple[dict[str, list[float]], int]:
        engine, backend = make_engine(config(budget_mb=25))
        lines = {"busy": ["t0", "t1"] * 10, "mixed": [f"t{i % 4}" for i in range(12)], "urgent": ["t5"] * 4}
        done: dict[str, list[float]] = {name: [] for name in lines}
        missed = 0

        async def one(name: str, i: int, ctype: str) -> None:
            nonlocal missed
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3.0 if tight and name == "urgent" else None
            try:
                await engine.inspect(request(ctype, cid=f"{name}-{i}", deadline=deadline))
                done[name].append(engine.now())
            except DeadlinePassed:
                missed += 1

        async def board(name: str, types: list[str], start_s: float) -> list[Any]:
            await asyncio.sleep(start_s)
            tasks = []
            for i, ctype in enumerate(types):
                tasks.append(asyncio.ensure_future(one(name, i, ctype)))
                await asyncio.sleep(0.004)
            return await asyncio.gather(*tasks)

        async def drive() -> None:
            await engine.start()
            await asyncio.gather(board("busy", lines["busy"], 0), board("mixed", lines["mixed"], 0),
                                 board("urgent", lines["urgent"], 0.05))

        run_virtual(drive())
        assert backend.violations == []
        return done, missed

    done, missed = run(tight=True)
    assert missed == 0 and len(done["urgent"]) == 4
    assert len(done["busy"]) == 20 and len(done["mixed"]) == 12  # the others finish too
    plain, plain_missed = run(tight=False)
    assert max(done["urgent"]) < max(plain["urgent"])  # served earlier than in arranged order


def test_the_decision_log_is_bounded_while_the_counters_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service runs for months: ``Engine.decisions`` keeps the latest DECISION_LOG only, and the
    reports count from ``stats`` (kills: an unbounded list, or switches counted from the log)."""
    import orchestrator.engine.engine as engine_module

    monkeypatch.setattr(engine_module, "DECISION_LOG", 5)
    engine, _ = make_engine(config(budget_mb=25))

    async def drive() -> None:
        await engine.start()
        await asyncio.gather(*(engine.inspect(request(f"t{i % 6}", cid=str(i))) for i in range(40)))

    run_virtual(drive())
    assert len(engine.decisions) == 5
    assert engine.stats.switches == engine.stats.loads >= 8  # every load came from storage
