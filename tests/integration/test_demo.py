"""The demo end to end on a real embedded tritonserver: a tiny exported CoE, one whole board."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.build import export_coe
from exporter.generate import generate, preset_options
from orchestrator.coe import CoEDefinition
from orchestrator.demo import run_demo
from orchestrator.triton.launcher import EmbeddedTriton

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_board(tmp_path_factory: pytest.TempPathFactory) -> tuple[CoEDefinition, Path]:
    coe = generate(
        preset_options(
            "demo", types=4, detectors=1, detector_share=0.5, components=40,
            classifier_mb=0.5, detector_mb=1.0, image_size=32,
        )
    )
    repo = tmp_path_factory.mktemp("demo_repo")
    export_coe(coe, repo, jobs=1)
    return coe, repo


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
