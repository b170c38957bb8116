"""Changing an expert while a board streams, on the real embedded tritonserver.

One InspectBoard stream, in three phases: after the first, ``expert add --replace`` installs a
version of the busiest classifier with other weights (every image becomes a defect); after the
second, ``expert rollback`` takes it back. The budget holds every expert, so the classifier is
resident throughout: the new version reaches the verdicts only because the engine replaces the
held copy (kills: no version watch, or ``CoreScheduler.refresh`` doing nothing). Checked: every component one
verdict; each verdict of the classifier names the version of its phase and equals ONNX Runtime on
that version's file; other experts stay at version 1; the verdict log records each version with
its file's hash; the core's accounting never exceeds the budget; no restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporter import repository
from exporter.build import add_expert, rollback_expert
from orchestrator import experts_io, model_versions
from orchestrator.board_source import BoardSource
from orchestrator.client import InspectionClient
from orchestrator.coe import CoEDefinition
from orchestrator.config_reader import read_yaml_file
from orchestrator.core.profile import parse_profile
from orchestrator.demo import demo_budget_bytes, demo_spec
from orchestrator.engine.types import InspectRequest, Verdict
from orchestrator.frontend.board import BoardSummary
from orchestrator.serve import Service, run_service
from orchestrator.verdicts.config import VerdictLogConfig
from orchestrator.verdicts.store import open_read_only
from tests.integration.test_engine_triton import reference_outcome

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def defect_everywhere(src: Path, dest: Path) -> Path:
    """``src`` with the no-defect logit's bias lowered by 100: same inputs and outputs, other
    weights, and a classifier that calls every image a defect (a visible change of verdicts)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    out_node = next(n for n in model.graph.node if experts_io.CLASSIFIER_OUTPUT in n.output)
    bias_name = out_node.input[2]
    init = next(i for i in model.graph.initializer if i.name == bias_name)
    bias = numpy_helper.to_array(init).copy()
    bias[experts_io.NO_DEFECT_CLASS] -= 100.0
    init.CopyFrom(numpy_helper.from_array(bias.astype(np.float32), bias_name))
    onnx.save(model, str(dest))
    return dest


def test_an_expert_is_replaced_and_rolled_back_while_a_board_streams(
    tiny_board: tuple[CoEDefinition, Path], tiny_coe_file: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    coe, shared_repo = tiny_board
    repo = tmp_path / "repo"  # a copy: the session's repository stays at version 1
    shutil.copytree(shared_repo, repo)
    requests = [
        InspectRequest("swap", str(r.request_id), r.component_type, r.image)
        for r in BoardSource(coe, seed=0, defect_share=0.05).requests(None, order="board", encoding="png")
    ]
    third = len(requests) // 3
    phases = [requests[:third], requests[third : 2 * third], requests[2 * third :]]
    phase_of = {r.component_id: i for i, batch in enumerate(phases) for r in batch}
    # the classifier that runs most often in its least busy phase (each phase must use it)
    victim = max(
        sorted({coe.routing[t].classifier for t in coe.routing}),
        key=lambda c: min(sum(coe.routing[r.component_type].classifier == c for r in b) for b in phases),
    )
    v2_file = defect_everywhere(repository.model_path(repo, victim), tmp_path / "v2.onnx")

    profile = parse_profile(read_yaml_file(tiny_profile), str(tiny_profile))
    budget = demo_budget_bytes(profile, len(coe.experts))  # every expert resident
    spec = dataclasses.replace(
        demo_spec(tiny_coe_file, repo, tiny_profile, budget, None),
        version_poll_s=0.1,
        verdict_log=VerdictLogConfig(path=tmp_path / "verdicts.sqlite"),
    )
    verdicts: list[Verdict] = []
    over_budget: list[str] = []
    swaps_seen: list[int] = []

    async def on_ready(service: Service) -> None:
        engine = service.engine
        phase_done = [asyncio.Event() for _ in phases]
        go = [asyncio.Event() for _ in phases]
        go[0].set()

        async def source() -> AsyncIterator[InspectRequest]:
            for i, batch in enumerate(phases):
                await go[i].wait()
                for r in batch:
                    yield r

        async def wait_swapped(n: int) -> None:
            """Until the engine has replaced the victim ``n`` times (the copy it held is gone)."""
            deadline = time.monotonic() + 20
            while engine.stats.version_swaps < n:
                assert time.monotonic() < deadline, f"no swap {n} within 20 s"
                await asyncio.sleep(0.02)
            swaps_seen.append(engine.stats.version_swaps)

        async def operator() -> None:
            await phase_done[0].wait()
            await asyncio.to_thread(add_expert, repo, victim, onnx_file=v2_file, replace=True)
            await wait_swapped(1)
            go[1].set()
            await phase_done[1].wait()
            await asyncio.to_thread(rollback_expert, repo, victim)
            await wait_swapped(2)
            go[2].set()

        async def budget_watch() -> None:
            while True:
                for ex in engine.status().executors:
                    if ex.used_bytes > ex.budget_bytes:
                        over_budget.append(f"{ex.name}: {ex.used_bytes} > {ex.budget_bytes}")
                await asyncio.sleep(0.02)

        ops = asyncio.ensure_future(operator())
        watch = asyncio.ensure_future(budget_watch())
        counts = [0, 0, 0]
        try:
            async with InspectionClient(service.address) as client:
                async for item in client.inspect_board(source(), timeout=120):
                    if isinstance(item, BoardSummary):
                        continue
                    verdicts.append(item)
                    i = phase_of[item.component_id]
                    counts[i] += 1
                    if counts[i] == len(phases[i]):
                        phase_done[i].set()
            await ops
        finally:
            watch.cancel()
            ops.cancel()
        assert engine.stats.restarts == 0
        stop.set()

    stop = asyncio.Event()
    asyncio.run(run_service(spec, stop, on_ready=on_ready, drain_timeout_s=5.0))

    counts = Counter(v.component_id for v in verdicts)
    assert len(counts) == len(requests) and max(counts.values()) == 1
    assert over_budget == []
    assert swaps_seen == [1, 2]
    phase_versions = [{victim: 1}, {victim: 2}, {victim: 1}]
    sessions: dict[Any, Any] = {}
    by_id = {r.component_id: r for r in requests}
    seen_victim = [0, 0, 0]
    for v in verdicts:
        i = phase_of[v.component_id]
        assert v.error is None, v.error
        for use in v.experts:
            want = str(phase_versions[i].get(use.expert, 1))
            assert use.version == want, f"phase {i}: {v.component_id} ran {use.expert}@{use.version}, expected @{want}"
            seen_victim[i] += use.expert == victim
        req = by_id[v.component_id]
        assert isinstance(req.image, bytes)
        want_outcome = reference_outcome(coe, repo, req.component_type, req.image, sessions, phase_versions[i])
        assert v.outcome == want_outcome, v.component_id
    assert all(seen_victim), f"the victim ran in every phase: {seen_victim}"
    # version 2 made every one of its components a defect (the change is visible in the verdicts)
    assert all(v.outcome == "defect" for v in verdicts if phase_of[v.component_id] == 1 and v.experts[0].expert == victim)

    store = open_read_only(tmp_path / "verdicts.sqlite")
    try:
        logged = {r.verdict.component_id: r for r in store.records("swap")}
    finally:
        store.close()
    assert set(logged) == set(counts)
    hashes = {
        "1": repository.file_sha256(model_versions.model_file(repo / victim, 1)),
        "2": repository.file_sha256(model_versions.model_file(repo / victim, 2)),  # now in retired/
    }
    for cid, rec in logged.items():
        for e in rec.experts:
            if e.expert == victim:
                assert e.sha256 == hashes[e.version], f"{cid}: {e.expert}@{e.version} logged with another file's hash"
