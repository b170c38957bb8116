"""Changing experts while serving, on the fake backend (virtual clock).

The engine names in each verdict the version its expert's load took; when a new version is on
disk (``FakeBackend.disk_versions``), the held copy is replaced once no batch runs on it: batches
running finish on the old version, later ones run on the new, and a rollback works the same way.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from orchestrator.core.decisions import Unload
from orchestrator.engine.types import Verdict
from tests.unit.engine.test_engine import config, make_engine, request
from tests.unit.engine.virtual_time import run_virtual


def _versions(verdicts: list[Verdict], expert: str) -> list[str]:
    return [e.version for v in verdicts for e in v.experts if e.expert == expert]


def test_verdicts_name_the_version_each_load_took_and_a_new_version_replaces_the_held_copy() -> None:
    engine, backend = make_engine(config(budget_mb=60), version_poll_s=0.5)
    expert = "cls_0"

    shown: list[str] = []  # the version Status reports for the resident copy (kills: none)

    def status_version() -> None:
        shown.extend(r.version for ex in engine.status().executors for r in ex.resident if r.expert == expert)

    async def drive() -> tuple[list[Verdict], list[Verdict], list[Verdict], int]:
        await engine.start()
        before = list(await asyncio.gather(*(engine.inspect(request("t0", cid=f"a{i}")) for i in range(3))))
        status_version()
        backend.disk_versions[expert] = "2"  # `coserve expert add --replace` installed version 2
        await asyncio.sleep(1.0)  # the watch sees it within one poll; the idle copy is unloaded
        unloads_after_swap = sum(1 for op in backend.log if op[:3] == ("unload", "cpu0", expert))
        after = list(await asyncio.gather(*(engine.inspect(request("t0", cid=f"b{i}")) for i in range(3))))
        status_version()
        backend.disk_versions[expert] = "1"  # `coserve expert rollback`
        await asyncio.sleep(1.0)
        back = list(await asyncio.gather(*(engine.inspect(request("t0", cid=f"c{i}")) for i in range(3))))
        await engine.close()
        return before, after, back, unloads_after_swap

    before, after, back, unloads = run_virtual(drive())
    assert _versions(before, expert) == ["1"] * 3
    assert unloads == 1  # replaced while idle, before any request asked for it (kills: no refresh)
    assert _versions(after, expert) == ["2"] * 3
    assert _versions(back, expert) == ["1"] * 3
    assert shown == ["1", "2"]
    ran = [v for _, e, v in backend.infer_versions if e == expert]
    assert [v for v, _ in itertools.groupby(ran)] == ["1", "2", "1"]  # what ran, batch by batch
    assert engine.stats.version_swaps == 2
    assert backend.violations == []
    # an expert whose version did not change was left alone
    assert not [d for d in engine.decisions if isinstance(d, Unload) and d.expert != expert]


def test_a_batch_running_when_the_version_changes_finishes_on_the_old_one() -> None:
    engine, backend = make_engine(config(budget_mb=60), version_poll_s=0)  # no watch: driven by hand
    expert = "cls_0"

    async def drive() -> tuple[Any, ...]:
        await engine.start()
        await engine.inspect(request("t0", cid="warm"))  # cls_0 resident, version 1
        first = asyncio.ensure_future(engine.inspect(request("t0", cid="running")))
        await asyncio.sleep(0.005)  # its batch runs now (K + B = 0.02 s)
        assert backend.loaded_version[("cpu0", expert)] == "1"
        backend.disk_versions[expert] = "2"
        swapped_now = engine.check_versions({expert: "2"})
        queued = asyncio.ensure_future(engine.inspect(request("t0", cid="queued")))
        running, later = await asyncio.gather(first, queued)
        await engine.close()
        return swapped_now, running, later

    swapped_now, running, later = run_virtual(drive())
    assert swapped_now == 0  # pinned by the running batch: the unload waits for it
    assert _versions([running], expert) == ["1"]
    assert _versions([later], expert) == ["2"]
    ops = [op[0] for op in backend.log if op[2] == expert]
    assert ops == ["load", "infer", "infer", "unload", "load", "infer"]
    assert backend.violations == []
