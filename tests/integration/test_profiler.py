"""``coserve profile`` end to end on the real embedded tritonserver (the tiny demo board)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.cli import main
from orchestrator.coe import CoEDefinition, dump_coe
from orchestrator.config_reader import read_yaml_file
from orchestrator.core.profile import parse_profile
from orchestrator.triton.launcher import build_fast_release

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_quick_profile_measures_every_architecture_and_feeds_the_simulator(
    tiny_board: tuple[CoEDefinition, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coe, repo = tiny_board
    coe_file = tmp_path / "coe.yaml"
    dump_coe(coe, coe_file)
    out = tmp_path / "profile.yaml"

    assert main(["profile", "--coe", str(coe_file), "--repo", str(repo), "--out", str(out), "--quick", "--explain"]) == 0
    printed = capsys.readouterr().out
    text = out.read_text()
    assert text.startswith("# Cost profile measured by `coserve profile`")
    fast = build_fast_release()[0] is not None  # a C compiler builds the shim (docs/triton.md)
    mode = "fast-release" if fast else "stock"
    assert "triton: 2.51" in text and f"unload mode: {mode}" in text
    profile = parse_profile(read_yaml_file(out), str(out))
    assert set(profile.architectures) == {"classifier", "detector"}
    spec = profile.processor("cpu")
    # fast release (the embedded default): memory back within 0.1 s of the unload call, where the
    # stock Python backend takes ~1.1 s (docs/triton.md)
    assert spec.unload_mode == mode
    assert 0 < spec.unload_time_s < 0.1 if fast else 0.5 < spec.unload_time_s < 5.0
    assert spec.server_growth_bytes is not None and spec.server_growth_bytes > 0
    # the libraries every model process maps: ~40 MB on this box (Python, numpy, ONNX Runtime)
    assert spec.shared_bytes is not None and spec.shared_bytes > 10 << 20
    assert spec.server_idle_bytes and spec.server_idle_bytes > 10 << 20
    assert spec.overhead_fixed_bytes is not None and spec.overhead_fixed_bytes > 10 << 20
    for arch in ("classifier", "detector"):
        cost = profile.cost(arch, "cpu")
        assert cost is not None and cost.measured_expert in coe.experts
        assert coe.experts[cost.measured_expert].arch == arch
        # R^2 is kept, not judged here: for an expert this small latency is nearly flat in the
        # batch size, so R^2 says little; how well the profile predicts is benchmarks/profile_accuracy.py's job
        assert cost.k_s > 0 and cost.r2 is not None and cost.r2 <= 1.0
        assert 0.02 < cost.load_time_s["disk"] < 10 and cost.load_time_cold_s
        # what an expert adds (its model process's private pages + the server's growth) is far
        # more than the small file
        assert cost.weight_bytes and cost.file_bytes and cost.weight_bytes > 5 * cost.file_bytes
        assert cost.peak_bytes is not None and cost.peak_bytes >= cost.weight_bytes
        assert 1 <= cost.max_batch <= 16
        # a load is CPU work on this host (a model process starts, imports ONNX Runtime, builds a
        # session): measured, and more than nothing; its first batch costs extra (>= 0)
        assert cost.load_cpu_s is not None and 0.02 < cost.load_cpu_s < 20
        assert cost.first_batch_extra_s is not None and cost.first_batch_extra_s >= 0
    assert profile.host_cpu_cores is not None and profile.host_cpu_cores >= 1
    assert "where one load and one unload go" in printed and "ORT session creation" in printed

    assert main(["simulate", "--profile", str(out), "--coe", str(coe_file), "--policy", "coserve"]) == 0
    assert "coserve" in capsys.readouterr().out


def test_experts_loaded_together_stay_within_the_profiles_accounting(
    tiny_board: tuple[CoEDefinition, Path], tiny_profile: Path
) -> None:
    """The accounting the engine budgets by (``executor_reserve_bytes`` once, each expert's
    ``weight_bytes``) holds the measured footprint (model processes' PSS + the server's growth
    over idle) of every tiny-board expert loaded at once on a fresh server, each having served a
    batch of every size, and is tighter than counting the shared pages once per expert
    (mutation killed: shared_bytes left out of the reserve, tests/MUTATIONS.md)."""
    import asyncio

    from orchestrator.triton import processes
    from orchestrator.triton.adapter import TritonAdapter
    from orchestrator.triton.launcher import EmbeddedTriton
    from orchestrator.triton.model_config import ModelConfig

    coe, repo = tiny_board
    profile = parse_profile(read_yaml_file(tiny_profile), str(tiny_profile))
    spec = profile.processor("cpu")
    names = sorted(coe.experts)
    accounted = spec.executor_reserve_bytes() + sum(
        profile.cost(coe.experts[n].arch, "cpu").weight_bytes or 0 for n in names  # type: ignore[union-attr]
    )
    server = EmbeddedTriton(repo).start()
    try:
        async def load_all() -> tuple[int, int]:
            idle = processes.memory(server.pid).pss_bytes  # type: ignore[arg-type]
            async with TritonAdapter(server.grpc_url, process_probe=server.process_probe()) as adapter:
                for n in names:
                    await adapter.load(n)
                    # served: one batch of each size up to its max (the allocator keeps what they took)
                    size, largest = 1, max(1, ModelConfig.read(repo / n).max_batch_size)
                    while size <= largest:
                        batch = np.zeros((size, *coe.experts[n].input_shape), dtype=np.float32)
                        await adapter.infer(n, {"image": batch})
                        size *= 2
                await asyncio.sleep(0.5)
                models = sum(p.pss_bytes for p in server.model_processes())
                grown = processes.memory(server.pid).pss_bytes - idle  # type: ignore[arg-type]
                return models, grown

        models, grown = asyncio.run(load_all())
    finally:
        server.stop()
    measured = models + max(0, grown)
    assert measured <= accounted, (measured, accounted)
    alone = len(names) * spec.shared_bytes  # type: ignore[operator]
    assert accounted < measured + alone / 2, "the shared pages are held once, not once per expert"
