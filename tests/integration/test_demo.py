"""The demo end to end through the service on a real embedded tritonserver: one whole board."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.board_source import BoardSource
from orchestrator.coe import CoEDefinition
from orchestrator.demo import EXIT_INCOMPLETE, EXIT_OK, run_demo
from orchestrator.triton.launcher import EmbeddedTriton
from tests.integration.test_engine_triton import reference_outcome

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def expected_verdicts(coe: CoEDefinition, repo: Path, board_seed: int = 0) -> dict[str, str]:
    sessions: dict = {}
    return {
        str(r.request_id): reference_outcome(coe, repo, r.component_type, r.image, sessions)
        for r in BoardSource(coe, seed=board_seed, defect_share=0.05).requests(None, order="board", encoding="png")
    }


def test_demo_inspects_every_component_like_onnxruntime_within_the_budget(
    tiny_board: tuple[CoEDefinition, Path], tiny_coe_file: Path, tiny_profile: Path
) -> None:
    coe, repo = tiny_board
    lines: list[str] = []
    report = run_demo(coe, tiny_coe_file, repo, tiny_profile, max_resident=1, say=lines.append)
    assert report.exit_code() == EXIT_OK and report.not_inspected() == 0
    assert report.verdicts == expected_verdicts(coe, repo)
    for experts in report.experts.values():  # the detector only ever after its classifier
        rule = next(r for r in coe.routing.values() if r.classifier == experts[0])
        assert experts[1:] in ([], [rule.detector])
    assert 0 < report.peak_footprint_bytes <= report.budget_bytes
    assert report.switches > 0 and "tritonserver stopped (drained)" in (report.server_end or "")
    assert any("board inspected" in line for line in lines)


def test_demo_against_an_external_server_by_url(
    tiny_board: tuple[CoEDefinition, Path], tiny_coe_file: Path, tiny_profile: Path
) -> None:
    coe, repo = tiny_board
    with EmbeddedTriton(repo) as server:  # stands in for NVIDIA's container: reached by URL only
        report = run_demo(coe, tiny_coe_file, repo, tiny_profile, max_resident=2, triton_url=server.grpc_url,
                          say=lambda _: None)
        assert server.model_processes() == []  # the service unloads what it loaded on a server it does not own
    assert report.exit_code() == EXIT_OK and report.verdicts == expected_verdicts(coe, repo)
    assert report.server_end is None  # an external server is not ours to stop


def test_a_corrupt_expert_fails_only_its_components(
    tiny_board: tuple[CoEDefinition, Path], tiny_coe_file: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    coe, repo = tiny_board
    broken_repo = tmp_path / "repo"
    shutil.copytree(repo, broken_repo)
    counts: dict[str, int] = {}
    for ctype, n in coe.board.mix.items():
        counts[coe.routing[ctype].classifier] = counts.get(coe.routing[ctype].classifier, 0) + n
    victim = max(sorted(counts), key=lambda name: counts[name])
    (broken_repo / victim / "1" / "model.onnx").write_bytes(b"not an onnx model")
    lines: list[str] = []

    report = run_demo(coe, tiny_coe_file, broken_repo, tiny_profile, max_resident=1, say=lines.append)

    assert report.exit_code() == EXIT_INCOMPLETE
    errors = {cid for cid, v in report.verdicts.items() if v == "error"}
    victims = {cid for cid, v in expected_verdicts(coe, repo).items()
               if coe.routing[_type_of(coe, cid)].classifier == victim}
    assert errors == victims
    assert all("INVALID_PROTOBUF" in report.causes[cid] or "failed to load" in report.causes[cid] for cid in errors)
    assert set(report.verdicts.values()) - {"error"}, "the other experts must carry on"
    assert any("NOT INSPECTED" in line for line in lines)


def _type_of(coe: CoEDefinition, component_id: str) -> str:
    requests = BoardSource(coe, seed=0, defect_share=0.05).requests(None, order="board", encoding="png")
    return next(r.component_type for r in requests if str(r.request_id) == component_id)
