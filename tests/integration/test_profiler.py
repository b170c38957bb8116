"""``coserve profile`` end to end on the real embedded tritonserver (the tiny demo board)."""

from __future__ import annotations

from pathlib import Path

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
        # the footprint is the model process + the server's growth, far more than the small file
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
