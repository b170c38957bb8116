"""The engine driving the real Triton: two embedded servers on loopback, one executor each.

Every verdict must be the one the same expert chain gives when run directly in ONNX Runtime on
the same decoded images (classifier, then the shared detector for "no defect" components routed
to it), and the core's memory bound must hold on each executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from orchestrator import experts_io, model_versions
from orchestrator.board_source import BoardSource
from orchestrator.coe import CoEDefinition
from orchestrator.core.profile import parse_profile
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.engine.engine import Engine
from orchestrator.engine.triton_backend import ExecutorTarget, TritonBackend
from orchestrator.engine.types import InspectRequest
from orchestrator.images import decode_image
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MB = 1_000_000
COST = {"k_s": 0.002, "b_s": 0.002, "max_batch": 8, "load_time_s": {"disk": 0.2}, "weight_bytes": 60 * MB}
PROFILE = parse_profile(
    {"name": "test", "processors": {"cpu": {"concurrent_loads": 2, "unload_time_s": 0.03}},
     "architectures": {"classifier": {"cpu": COST}, "detector": {"cpu": COST}}},
    "test-profile",
)


def reference_outcome(
    coe: CoEDefinition, repo: Path, ctype: str, png: bytes, sessions: dict, versions: Mapping[str, int] | None = None
) -> str:
    """The verdict of the expert chain run directly in ONNX Runtime, each expert at its version
    in ``versions`` (default 1)."""
    rule = coe.routing[ctype]

    def run(expert: str) -> dict[str, np.ndarray]:
        key = (expert, (versions or {}).get(expert, 1))
        if key not in sessions:
            path = model_versions.model_file(repo / expert, key[1])
            sessions[key] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = decode_image(png, coe.experts[expert].input_shape)[None]
        names = [o.name for o in sessions[key].get_outputs()]
        return dict(zip(names, sessions[key].run(None, {experts_io.INPUT_NAME: x}), strict=True))

    logits = run(rule.classifier)[experts_io.CLASSIFIER_OUTPUT]
    if not experts_io.classifier_no_defect(logits)[0]:
        return "defect"
    if rule.detector is None:
        return "pass"
    out = run(rule.detector)
    _, h, w = coe.experts[rule.detector].input_shape
    return "pass" if experts_io.detector_pass(out["boxes"], out["objectness"], (h, w))[0] else "fail"


def test_a_board_through_the_engine_on_two_servers_matches_onnxruntime(tiny_board: tuple[CoEDefinition, Path]) -> None:
    coe, repo = tiny_board
    config = ServeConfig((ExecutorConfig("cpu0", "cpu", 130 * MB), ExecutorConfig("cpu1", "cpu", 130 * MB)))
    requests = list(BoardSource(coe, seed=3, defect_share=0.2).requests(None, order="board", encoding="png"))

    with EmbeddedTriton(repo) as first, EmbeddedTriton(repo) as second:
        servers = {"cpu0": first, "cpu1": second}

        async def run() -> tuple[list, Engine, dict[str, int]]:
            targets = {
                name: ExecutorTarget(f"embedded-{name}", TritonAdapter(s.grpc_url, process_probe=s.process_probe()), "cpu")
                for name, s in servers.items()
            }
            engine = Engine(coe, config, PROFILE, TritonBackend(repo, targets))
            peak = {name: 0 for name in servers}
            try:
                await engine.start()
                tasks = [
                    asyncio.ensure_future(
                        engine.inspect(InspectRequest("board-3", str(r.request_id), r.component_type, r.image))
                    )
                    for r in requests
                ]
                while not all(t.done() for t in tasks):
                    for name, s in servers.items():  # experts holding memory on each server
                        peak[name] = max(peak[name], len({p.model for p in s.model_processes()}))
                    await asyncio.sleep(0.02)
                return await asyncio.gather(*tasks), engine, peak
            finally:
                await engine.close()

        verdicts, engine, peak = asyncio.run(run())

    sessions: dict = {}
    expected = {str(r.request_id): reference_outcome(coe, repo, r.component_type, r.image, sessions) for r in requests}
    got = {v.component_id: v.outcome for v in verdicts}
    assert got == expected
    assert {v.outcome for v in verdicts} - {"error"} and all(v.error is None for v in verdicts)
    # 130 MB budget / 60 MB per expert: at most 2 experts hold memory on each executor's server
    assert all(n <= 2 for n in peak.values()), peak
    used = {d.executor for d in engine.decisions if type(d).__name__ == "Dispatch"}
    assert used == {"cpu0", "cpu1"}  # both servers served
    assert engine.stats.loads >= 2 and engine.stats.unload_failures == 0
