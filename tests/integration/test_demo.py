"""The demo end to end on a real embedded tritonserver: a tiny exported CoE, one whole board."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.coe import CoEDefinition
from orchestrator.demo import run_demo
from orchestrator.triton.launcher import EmbeddedTriton

pytestmark = pytest.mark.integration


def test_demo_inspects_every_component_within_the_resident_bound(tiny_board: tuple[CoEDefinition, Path]) -> None:
    coe, repo = tiny_board
    lines: list[str] = []

    report = run_demo(coe, repo, max_resident=1, say=lines.append)

    assert report.components == coe.board.total
    assert len(report.verdicts) == coe.board.total
    assert sum(report.counts().values()) == coe.board.total
    assert report.peak_resident == 1
    used_classifiers = {coe.routing[t].classifier for t, n in coe.board.mix.items() if n > 0}
    names = [run.name for run in report.experts]
    assert len(names) == len(set(names)), "an expert was loaded twice"
    assert used_classifiers <= set(names)
    # every verdict comes from the right expert: defects and detector-less types from the type's
    # classifier; "no defect" components of routed types from their shared detector, after it
    for rid, ctype in report.component_types.items():
        rule = coe.routing[ctype]
        verdict, expert = report.verdicts[rid], report.decided_by[rid]
        if verdict == "defect" or rule.detector is None:
            assert expert == rule.classifier
            assert verdict in ("defect", "pass")
        else:
            assert expert == rule.detector
            assert verdict in ("pass", "fail")
    order = [run.name for run in report.experts]
    for run in report.experts:
        assert run.unload_gone_s > 0
        if run.arch == "detector":
            feeders = {coe.routing[t].classifier for t, r in coe.routing.items() if r.detector == run.name}
            assert all(order.index(c) < order.index(run.name) for c in feeders if c in order)
    assert any("server stopped" in line for line in lines)


def test_demo_against_an_external_server_by_url(tiny_board: tuple[CoEDefinition, Path]) -> None:
    coe, repo = tiny_board
    with EmbeddedTriton(repo) as server:  # stands in for NVIDIA's container: reached by URL only
        report = run_demo(coe, repo, max_resident=2, triton_url=server.grpc_url, say=lambda _: None)
        assert server.model_processes() == []  # index-confirmed unloads still wait for the processes
    assert len(report.verdicts) == coe.board.total
    assert report.peak_resident <= 2


def test_a_corrupt_expert_fails_only_its_components(tiny_board: tuple[CoEDefinition, Path], tmp_path: Path) -> None:
    coe, repo = tiny_board
    broken_repo = tmp_path / "repo"
    shutil.copytree(repo, broken_repo)
    # the busiest classifier gets a corrupt model file: its load fails with the server's message
    counts: dict[str, int] = {}
    for ctype, n in coe.board.mix.items():
        counts[coe.routing[ctype].classifier] = counts.get(coe.routing[ctype].classifier, 0) + n
    victim = max(sorted(counts), key=lambda name: counts[name])
    (broken_repo / victim / "1" / "model.onnx").write_bytes(b"not an onnx model")
    lines: list[str] = []

    report = run_demo(coe, broken_repo, max_resident=1, say=lines.append)

    assert len(report.verdicts) == coe.board.total  # nothing dropped
    errors = {rid for rid, v in report.verdicts.items() if v == "error"}
    assert errors == {rid for rid, t in report.component_types.items() if coe.routing[t].classifier == victim}
    assert all(report.decided_by[rid] == victim for rid in errors)
    assert set(report.verdicts.values()) - {"error"}, "the other experts must carry on"
    failed = [run for run in report.experts if run.error]
    assert [run.name for run in failed] == [victim]
    assert "load failed" in (failed[0].error or "") and "INVALID_PROTOBUF" in (failed[0].error or "")
    assert any("NOT INSPECTED" in line for line in lines)
