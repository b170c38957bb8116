"""``RecordedService`` over a counting fake ``InspectionService`` and a real store: a retry is
answered from the log, errors are re-inspected, concurrent duplicates share one inspection, and a
log that cannot be written refuses work before inspecting."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from orchestrator.engine.types import BadRequest, EngineStatus, ExpertUse, InspectRequest, NotServing, Verdict
from orchestrator.frontend.status_codes import status_for
from orchestrator.verdicts.service import RecordedService, VerdictLogUnavailable
from orchestrator.verdicts.store import VerdictStore
from tests.unit.verdicts.test_store import _fail_full


class Counting:
    """Answers ``pass`` (or ``error`` for component ids starting with "err") after ``delay_s``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[str] = []
        self.delay_s = delay_s

    def serving(self) -> bool:
        return True

    def component_types(self) -> Sequence[str]:
        return ["t1", "t2"]

    def input_shape(self, component_type: str) -> tuple[int, int, int]:
        return (3, 8, 8)

    async def inspect(self, request: InspectRequest) -> Verdict:
        self.calls.append(request.component_id)
        await asyncio.sleep(self.delay_s)
        n = len(self.calls)
        if request.component_id.startswith("err"):
            return Verdict(request.board_id, request.component_id, request.component_type, "error", error="flaky")
        return Verdict(request.board_id, request.component_id, request.component_type, "pass", scores=(0.9, 0.1),
                       experts=(ExpertUse("cls", "1"),), compute_s=0.001 * n)

    def status(self) -> EngineStatus:
        return EngineStatus(policy="p", serving=True, notes=("inner note",))


def req(component: str, ctype: str = "t1", board: str = "b1") -> InspectRequest:
    return InspectRequest(board, component, ctype, np.zeros((3, 8, 8), np.float32))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VerdictStore]:
    s = VerdictStore(tmp_path / "v.sqlite", retry_s=0.02)
    s.start()
    yield s
    s.close()


def test_a_retry_returns_the_recorded_verdict_without_inspecting(store: VerdictStore) -> None:
    inner = Counting()
    service = RecordedService(inner, store)

    async def run() -> tuple[Verdict, Verdict, Verdict]:
        first = await service.inspect(req("c1"))
        again = await service.inspect(req("c1"))
        other_board = await service.inspect(req("c1", board="b2"))
        return first, again, other_board

    first, again, other = asyncio.run(run())
    assert again == first  # the recorded one, times included (compute_s differs per inspection)
    assert inner.calls == ["c1", "c1"] and other.compute_s != first.compute_s
    assert service.replayed == 1
    record = store.lookup("b1", "c1")
    assert record is not None and record.verdict == first  # logged before it was answered


def test_a_retry_after_a_restart_is_answered_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    first_store = VerdictStore(path)
    first_store.start()
    first = asyncio.run(RecordedService(Counting(), first_store).inspect(req("c1")))
    first_store.close()
    second_store = VerdictStore(path)
    second_store.start()
    inner = Counting()
    try:
        again = asyncio.run(RecordedService(inner, second_store).inspect(req("c1")))
    finally:
        second_store.close()
    assert again == first and inner.calls == []


def test_error_verdicts_are_logged_but_a_retry_inspects_again(store: VerdictStore) -> None:
    inner = Counting()
    service = RecordedService(inner, store)

    async def run() -> None:
        assert (await service.inspect(req("err1"))).outcome == "error"
        assert (await service.inspect(req("err1"))).outcome == "error"

    asyncio.run(run())
    assert inner.calls == ["err1", "err1"]
    assert [r.verdict.outcome for r in store.records("b1")] == ["error", "error"]


def test_concurrent_duplicates_share_one_inspection(store: VerdictStore) -> None:
    inner = Counting(delay_s=0.05)
    service = RecordedService(inner, store)

    async def run() -> list[Verdict]:
        return list(await asyncio.gather(*(service.inspect(req("c1")) for _ in range(5))))

    verdicts = asyncio.run(run())
    assert inner.calls == ["c1"] and len(set(verdicts)) == 1
    assert len(store.records("b1")) == 1


def test_a_withdrawn_first_request_leaves_the_retry_to_inspect(store: VerdictStore) -> None:
    inner = Counting(delay_s=0.05)
    service = RecordedService(inner, store)

    async def run() -> Verdict:
        first = asyncio.create_task(service.inspect(req("c1")))
        await asyncio.sleep(0.01)
        retry = asyncio.create_task(service.inspect(req("c1")))
        await asyncio.sleep(0.01)
        first.cancel()
        return await retry

    verdict = asyncio.run(run())
    assert verdict.outcome == "pass" and inner.calls == ["c1", "c1"]


def test_a_retry_naming_another_type_is_a_bad_request(store: VerdictStore) -> None:
    service = RecordedService(Counting(), store)

    async def run() -> None:
        await service.inspect(req("c1", "t1"))
        await service.inspect(req("c1", "t2"))

    with pytest.raises(BadRequest, match="was inspected as type 't1'"):
        asyncio.run(run())


def test_a_failing_log_refuses_work_before_inspecting(store: VerdictStore) -> None:
    inner = Counting()
    service = RecordedService(inner, store)
    store._before_write = _fail_full

    async def first() -> None:
        await service.inspect(req("c1"))

    with pytest.raises(VerdictLogUnavailable) as caught:  # inspected, but not answered unrecorded
        asyncio.run(first())
    assert inner.calls == ["c1"] and "is full" in str(caught.value)
    assert isinstance(caught.value, NotServing) and status_for(caught.value).name == "UNAVAILABLE"
    assert not service.serving()
    status = service.status()
    assert not status.serving and status.notes[0] == "inner note" and "is full" in status.notes[-1]
    store.retry_s = 60.0  # keep it failing while we look
    with pytest.raises(VerdictLogUnavailable, match="new work is refused"):
        asyncio.run(first())
    assert inner.calls == ["c1"]  # the second was refused before any inspection
    assert service.health().write_failures == 1
