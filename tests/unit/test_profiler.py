"""The profiler's pure parts (rules, fits, profile building) and its GPU path on a fake NVML."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest

from orchestrator.cli import main
from orchestrator.core.profile import parse_profile, profile_to_data
from orchestrator.errors import ConfigError
from profiler import build, fit
from profiler.build import build_profile
from profiler.measure import ArchMeasurement
from profiler.memory import Footprint, NoGpuError, model_footprint, require_gpu
from profiler.run import check_cache_current, check_unload_mode, run_profile


def test_figure_is_the_median_with_relative_spread() -> None:
    f = fit.Figure.of([1.0, 3.0, 2.0, 2.0])
    assert (f.median, f.n) == (2.0, 4)
    assert f.spread == pytest.approx(1.0)  # (3 - 1) / 2
    with pytest.raises(ValueError):
        fit.Figure.of([])


def test_linear_fit_recovers_k_and_b_and_scores_noise() -> None:
    exact = fit.fit_linear([1, 2, 4, 8], [0.003 * n + 0.002 for n in (1, 2, 4, 8)])
    assert exact.slope == pytest.approx(0.003) and exact.intercept == pytest.approx(0.002)
    assert exact.r2 == pytest.approx(1.0)
    noisy = fit.fit_linear([1, 2, 3, 4], [1.0, 3.0, 2.0, 4.0])
    assert 0 < noisy.r2 < 1
    assert fit.fit_linear([5, 5], [1.0, 3.0]) == fit.LinearFit(0.0, 2.0, 1.0)


def test_max_batch_is_where_doubling_stops_improving_per_item_latency() -> None:
    # on t = K n + B doubling gains under 5% per item from the first n > 9 B / K: K = 1, B = 1.02 -> 10
    # (per item 1.102 at 10, 1.051 at 20: 4.6% better; at 9, 1.113 -> 1.057: 5.1%), any integer, not
    # only the powers of two (mutation: powers of two only -> 16); B / K = 0.88 and 1.05 (two runs'
    # readings of a detector) give 8 and 10, where powers of two gave 8 and 16
    assert fit.plateau_batch(fit.LinearFit(1.0, 1.02, 1.0), 32) == 10
    assert fit.plateau_batch(fit.LinearFit(1.0, 0.88, 1.0), 32) == 8
    assert fit.plateau_batch(fit.LinearFit(1.0, 1.05, 1.0), 32) == 10
    assert fit.plateau_batch(fit.LinearFit(1.0, 1.0, 1.0), 4) == 4  # still improving at the largest size swept
    assert fit.plateau_batch(fit.LinearFit(1.0, 0.0, 1.0), 32) == 1  # no fixed cost: never improves
    with pytest.raises(ValueError):
        fit.plateau_batch(fit.LinearFit(1.0, 1.0, 1.0), 0)


@pytest.mark.parametrize(
    ("walls", "expected"),
    [
        ({1: 1.0, 2: 1.1, 4: 2.2}, 2),  # two cores: two loads overlap, four queue
        ({1: 1.0, 2: 2.0, 4: 4.0}, 1),  # loads serialised
        ({1: 1.0, 2: 1.0, 4: 1.05}, 4),  # fully parallel
        ({1: 1.0, 2: 1.95}, 1),  # 2.6% more throughput is not worth a second channel
    ],
)
def test_concurrent_loads_rule(walls: Mapping[int, float], expected: int) -> None:
    assert fit.concurrent_loads(walls) == expected


def test_overhead_splits_fixed_and_per_byte() -> None:
    over = fit.overhead([1e6, 11e6], [41e6, 61e6])
    assert over.intercept == pytest.approx(39e6) and over.slope == pytest.approx(2.0)
    flat = fit.overhead([1e6, 1.1e6], [50e6, 49e6])  # noise across near-equal sizes
    assert flat.slope == 0.0 and flat.intercept == pytest.approx(49.5e6)


def _measurement(
    arch: str, expert: str, file_mb: float, k: float, b: float, shared_mb: float = 20.0
) -> ArchMeasurement:
    m = ArchMeasurement(arch, "cpu", expert, int(file_mb * 1e6))
    m.warm_load_s = [0.20, 0.25, 0.22]
    m.cold_load_s = [0.30, 0.35, 0.32]
    m.unload_s = [1.1, 1.2, 1.15]
    m.concurrent_wall_s = {1: [0.2], 2: [0.22], 4: [0.45]}
    m.batch_latency_s = {n: [k * n + b] * 3 for n in (1, 2, 4, 8, 16)}
    m.activation_bytes = {n: [n * 1_000_000] * 3 for n in (1, 2, 4, 8, 16)}
    adds = int(40e6 + 2 * file_mb * 1e6)
    # PSS alone 5 MB over what it adds (its share of the libraries); 1 MB server growth
    m.footprints = [Footprint(adds + 4_000_000, adds - 1_000_000, 1_000_000, model_shared_bytes=int(shared_mb * 1e6))] * 3
    return m


def test_build_profile_maps_each_measurement_to_its_field() -> None:
    ms = [_measurement("classifier", "cls_a", 1.0, 0.001, 0.002),
          _measurement("detector", "det_a", 11.0, 0.003, 0.004, shared_mb=30.0)]
    profile = build_profile("p", ms, {"cls_a": 8, "det_a": 32}, "stock", 30_000_000, {"machine": "test"})
    cls = profile.cost("classifier", "cpu")
    assert cls is not None
    assert cls.k_s == pytest.approx(0.001) and cls.b_s == pytest.approx(0.002) and cls.r2 == pytest.approx(1.0)
    assert cls.max_batch == 8  # per-item latency keeps improving: capped by the model's max_batch_size
    assert cls.load_time_s == {"disk": 0.22} and cls.load_time_cold_s == pytest.approx(0.32)
    # what the expert adds (USS + the server's growth): not its PSS alone (46 MB), not the 1 MB file
    assert cls.weight_bytes == 42_000_000
    assert cls.activation_bytes_per_item == 1_000_000 and cls.peak_bytes == 42_000_000 + 8_000_000
    assert cls.measured_expert == "cls_a" and cls.file_bytes == 1_000_000
    spec = profile.processor("cpu")
    # the shared pages: the most any architecture's process shares (mutation: the least -> 20 MB)
    assert spec.shared_bytes == 30_000_000
    assert spec.executor_reserve_bytes() == 30_000_000  # no server growth given here
    assert spec.unload_time_s == pytest.approx(1.15) and spec.concurrent_loads == 2
    assert spec.overhead_fixed_bytes == pytest.approx(40e6, rel=1e-6)
    assert spec.overhead_bytes_per_file_byte == pytest.approx(2.0)
    assert spec.footprint_bytes(5_000_000) == pytest.approx(50e6, rel=1e-6)
    # the YAML format carries every new field and reads back the same profile
    assert parse_profile(profile_to_data(profile)) == profile


def test_storage_channels_come_from_loads_spread_across_servers() -> None:
    # one server loads nearly one at a time (per-server figure 1), two servers in parallel: the
    # box's storage channels are the spread figure (mutation: keep the per-server max -> 1)
    m = _measurement("classifier", "cls_a", 1.0, 0.001, 0.002)
    m.concurrent_wall_s = {1: [0.2], 2: [0.39]}
    m.spread_wall_s = {1: [0.2], 2: [0.23]}
    profile = build_profile("p", [m], {"cls_a": 8}, "stock", None, {})
    assert profile.processor("cpu").concurrent_loads == 1
    assert profile.storage_concurrent_loads == 2
    # no spread measurement (external server): the per-server figure
    m.spread_wall_s = {}
    assert build_profile("p", [m], {"cls_a": 8}, "stock", None, {}).storage_concurrent_loads == 1


def test_load_time_is_the_one_measured_at_the_box_channels_while_it_computes() -> None:
    # serving loads k at once (the box's channels) while executors compute: that busy figure is the
    # core's load time, the idle one is kept beside it (mutations: the idle median -> 0.22 s; the
    # one-at-a-time busy figure -> 0.27 s); without a busy measurement (an external server) the
    # idle figure, and no separate idle field
    m = _measurement("classifier", "cls_a", 1.0, 0.001, 0.002)
    m.spread_wall_s = {1: [0.2], 2: [0.26]}  # two servers load in parallel: 2 channels
    m.busy_load_s = {1: [0.26, 0.27, 0.28], 2: [0.31, 0.35, 0.33, 0.34]}
    profile = build_profile("p", [m], {"cls_a": 8}, "stock", None, {})
    cost = profile.cost("classifier", "cpu")
    assert profile.storage_concurrent_loads == 2
    assert cost is not None and cost.load_time_s == {"disk": 0.335} and cost.load_time_idle_s == pytest.approx(0.22)
    assert parse_profile(profile_to_data(profile)).cost("classifier", "cpu") == cost
    m.busy_load_s = {}
    cost = build_profile("p", [m], {"cls_a": 8}, "stock", None, {}).cost("classifier", "cpu")
    assert cost is not None and cost.load_time_s == {"disk": 0.22} and cost.load_time_idle_s is None


def test_load_cpu_first_batch_and_host_cores_come_from_their_measurements() -> None:
    # a load's and an unload's CPU seconds: the trimmed mean (one sample dropped at each end of six;
    # mutations: the median -> 0.3 and 0.03, the plain mean -> 0.467 and 0.055); the first batch's
    # extra: its median less the sweep's median one-item batch (k + b = 0.003; mutation: the raw
    # first-run median -> 0.033); the host's cores as given; none measured -> the fields stay unset
    m = _measurement("classifier", "cls_a", 1.0, 0.001, 0.002)
    m.load_cpu_s = [0.3, 0.2, 1.5, 0.3, 0.2, 0.3]
    m.watch_cores = [0.1, 0.2, 0.15]
    m.unload_cpu_s = [0.03, 0.2, 0.02, 0.03, 0.02, 0.03]
    m.first_run_s = [0.03, 0.033, 0.05]
    profile = build_profile("p", [m], {"cls_a": 8}, "stock", None, {}, host_cpu_cores=2)
    cost = profile.cost("classifier", "cpu")
    assert cost is not None and cost.load_cpu_s == pytest.approx(0.275) and cost.first_batch_extra_s == pytest.approx(0.030)
    assert cost.load_watch_cores == pytest.approx(0.15)
    assert profile.processor("cpu").unload_cpu_s == pytest.approx(0.0275)
    assert profile.host_cpu_cores == 2
    assert parse_profile(profile_to_data(profile)) == profile
    m.load_cpu_s, m.first_run_s, m.watch_cores, m.unload_cpu_s = [], [], [], []
    bare = build_profile("p", [m], {"cls_a": 8}, "stock", None, {})
    cost = bare.cost("classifier", "cpu")
    assert cost is not None and cost.load_cpu_s is None and cost.first_batch_extra_s is None
    assert cost.load_watch_cores is None and bare.processor("cpu").unload_cpu_s is None
    assert bare.host_cpu_cores is None and "host" not in profile_to_data(bare)


def test_profile_parser_names_bad_measured_fields() -> None:
    data = profile_to_data(build_profile("p", [_measurement("classifier", "c", 1.0, 0.001, 0.0)], {}, "stock", None, {}))
    data["architectures"]["classifier"]["cpu"]["spread"] = {"k_s": "wide"}
    with pytest.raises(ConfigError, match=r"architectures\.classifier\.cpu\.spread\.k_s"):
        parse_profile(data, "p.yaml")


def test_a_cached_profile_from_another_unload_mode_is_refused() -> None:
    profile = build_profile("p", [_measurement("classifier", "c", 1.0, 0.001, 0.0)], {}, "stock", None, {"unload_mode": "stock"})
    check_unload_mode(profile, "stock", "p.yaml")
    with pytest.raises(ConfigError, match="unload mode 'stock'.*re-run `coserve profile`"):
        check_unload_mode(profile, "fast-release", "p.yaml")


def test_a_cached_profile_without_the_shared_pages_is_measured_again() -> None:
    # the demo's and the bench's caches: host memory measured before shared_bytes existed (each
    # weight_bytes a whole footprint alone) is re-measured; one that has it, or one of an
    # external server (no model processes to see), is reused
    current = build_profile("p", [_measurement("classifier", "c", 1.0, 0.001, 0.0)], {}, "stock", 30_000_000,
                            {"unload_mode": "stock"})
    check_cache_current(current, "stock", "p.yaml")
    older = replace(current, processors={"cpu": replace(current.processor("cpu"), shared_bytes=None)})
    with pytest.raises(ConfigError, match=r"processors\.cpu\.shared_bytes.*re-run `coserve profile`"):
        check_cache_current(older, "stock", "p.yaml")
    check_cache_current(replace(older, measured={}), "external", "p.yaml")
    with pytest.raises(ConfigError, match="unload mode"):
        check_cache_current(current, "fast-release", "p.yaml")


class FakeNvml:
    def __init__(self, devices: int, used: Mapping[int, int]) -> None:
        self.devices, self.used = devices, dict(used)

    def device_count(self) -> int:
        return self.devices

    def used_bytes_by_pid(self) -> Mapping[int, int]:
        return self.used


def test_gpu_footprint_is_the_nvml_bytes_of_the_models_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.triton import processes

    stubs = [processes.ModelProcess(101, "cls_a", "cls_a_0_0", 70 << 20, 60 << 20, "r", 30 << 20)]
    monkeypatch.setattr(processes, "model_processes", lambda server, model=None: stubs)
    monkeypatch.setattr(processes, "memory", lambda pid: processes.ProcessMemory(pid, 0, 35 << 20, 0))
    nvml = FakeNvml(1, {101: 930 << 20, 999: 5 << 30})  # pid 999: another process on the GPU
    footprint = model_footprint(1, "cls_a", 30 << 20, nvml)
    assert footprint.gpu_bytes == 930 << 20 and footprint.total_bytes == 930 << 20  # context included
    assert footprint.server_growth_bytes == 5 << 20 and footprint.model_uss_bytes == 30 << 20
    assert model_footprint(1, "cls_a", 30 << 20).total_bytes == (60 << 20) + (5 << 20)  # host view
    # on the GPU nothing is shared: the device bytes are what the expert adds
    assert footprint.marginal_bytes == 930 << 20 and footprint.shared_bytes == 0


def test_host_footprint_splits_what_the_expert_adds_from_the_pages_it_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.triton import processes

    # two instances: RSS 70/75 MiB, PSS 60/62, USS 30/31; the shared part is one process's RSS - USS
    # (both map the same libraries; mutation: summed over the instances -> 84 MiB)
    stubs = [processes.ModelProcess(101, "cls_a", "cls_a_0_0", 70 << 20, 60 << 20, "r", 30 << 20),
             processes.ModelProcess(102, "cls_a", "cls_a_0_1", 75 << 20, 62 << 20, "r", 31 << 20)]
    monkeypatch.setattr(processes, "model_processes", lambda server, model=None: stubs)
    monkeypatch.setattr(processes, "memory", lambda pid: processes.ProcessMemory(pid, 0, 35 << 20, 0))
    footprint = model_footprint(1, "cls_a", 30 << 20)
    assert footprint.total_bytes == (122 << 20) + (5 << 20)  # PSS + growth: the expert alone
    assert footprint.marginal_bytes == (61 << 20) + (5 << 20)  # USS + growth: what it adds
    assert footprint.shared_bytes == 44 << 20


def test_gpu_profiling_without_a_gpu_fails_before_anything_starts(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from orchestrator.coe import parse_coe
    from orchestrator.triton import launcher

    def no_start(self: object) -> None:
        raise AssertionError("a server was started")

    monkeypatch.setattr(launcher.EmbeddedTriton, "start", no_start)
    coe = parse_coe(
        {"name": "x", "seed": 1, "experts": [{"name": "c", "arch": "classifier", "size_mb": 1}],
         "routing": [{"component_type": "t", "classifier": "c"}], "board": {"name": "b", "mix": {"t": 1}}}
    )
    with pytest.raises(NoGpuError, match="no GPU"):
        run_profile(coe, tmp_path, kinds=("cpu", "gpu"), gpu=FakeNvml(0, {}))
    with pytest.raises(NoGpuError):
        require_gpu(FakeNvml(0, {}))
    assert require_gpu(FakeNvml(2, {})).device_count() == 2



def test_gpu_profiling_against_an_external_server_needs_no_nvml_here(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """An external server's model processes cannot be seen, so NVML is never read for it, and the
    orchestrator's box (a container without the GPU, another host) need not have one (mutation
    killed: NVML required for every ``--kind gpu``: the compose stack's GPU profile fails)."""
    import profiler.run as run
    from orchestrator.coe import parse_coe

    class Reached(Exception):
        pass

    def measure_all(server: object, url: str, *a: object) -> None:
        assert server is None and url == "triton:8001"
        raise Reached

    def no_nvml(reader: object) -> None:
        raise AssertionError("NVML was required")

    monkeypatch.setattr(run, "_measure_all", measure_all)
    monkeypatch.setattr(run, "require_gpu", no_nvml)
    coe = parse_coe(
        {"name": "x", "seed": 1, "experts": [{"name": "c", "arch": "classifier", "size_mb": 1}],
         "routing": [{"component_type": "t", "classifier": "c"}], "board": {"name": "b", "mix": {"t": 1}}}
    )
    (tmp_path / "c" / "1").mkdir(parents=True)
    (tmp_path / "c" / "config.pbtxt").write_text("")
    (tmp_path / "c" / "1" / "model.onnx").write_bytes(b"")
    with pytest.raises(Reached):
        run.run_profile(coe, tmp_path, kinds=("cpu", "gpu"), triton_url="triton:8001")

def test_profile_kind_gpu_here_is_one_clear_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without NVML (this machine) the error names the package; with it, the empty repository."""
    coe = tmp_path / "coe.yaml"
    coe.write_text(
        "name: x\nseed: 1\nexperts: [{name: c, arch: classifier, size_mb: 1}]\n"
        "routing: [{component_type: t, classifier: c}]\nboard: {name: b, mix: {t: 1}}\n"
    )
    (tmp_path / "repo").mkdir()
    code = main(["profile", "--coe", str(coe), "--repo", str(tmp_path / "repo"), "--out", str(tmp_path / "p.yaml"),
                 "--kind", "gpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert "nvidia-ml-py" in err
    assert not (tmp_path / "p.yaml").exists()
    # against an external server NVML is not needed: the error is the empty repository's
    code = main(["profile", "--coe", str(coe), "--repo", str(tmp_path / "repo"), "--out", str(tmp_path / "p.yaml"),
                 "--kind", "gpu", "--triton-url", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "exported" in err and "nvidia-ml-py" not in err


def test_batch_line_weighs_each_size_by_its_relative_error() -> None:
    # t = 2 ms * n + 3 ms, with the largest size 5% slow (noise): least squares of relative
    # residuals keeps B within 5% of 3 ms (2.90); ordinary least squares lets the 16-item point
    # drag it 12% off (mutation: unweighted -> B 2.64 ms)
    latency = {n: 0.002 * n + 0.003 for n in (1, 2, 4, 8)}
    latency[16] = (0.002 * 16 + 0.003) * 1.05
    line = fit.fit_batch_line(latency)
    assert line.intercept == pytest.approx(0.003, rel=0.05)
    assert fit.fit_linear(list(map(float, latency)), list(latency.values())).intercept < 0.0027
    exact = fit.fit_batch_line({n: 0.002 * n + 0.003 for n in (1, 2, 4)})
    assert exact.slope == pytest.approx(0.002) and exact.intercept == pytest.approx(0.003) and exact.r2 == pytest.approx(1.0)
    assert fit.fit_batch_line({1: 0.0, 2: 0.001}).slope == pytest.approx(0.001)  # a zero latency weighs as the least
    with pytest.raises(ValueError):
        fit.fit_linear([1.0, 2.0], [1.0, 2.0], [0.0, 0.0])


def test_work_mean_trims_a_fifth_at_each_end() -> None:
    assert fit.work_mean([0.02, 0.03, 0.03, 0.02, 0.03, 0.5, 0.03, 0.02, 0.0, 0.03]) == pytest.approx(0.16 / 6)
    assert fit.work_mean([0.01, 0.04]) == pytest.approx(0.025)  # under five samples: the plain mean
    with pytest.raises(ValueError):
        fit.work_mean([])


def test_a_further_load_channel_needs_a_clear_gain() -> None:
    # 4 at once: 16% more loads per second than 2 (not clear); 2: 82% more than 1 (mutation: the old
    # 10% margin -> 4)
    assert fit.concurrent_loads({1: 1.0, 2: 1.1, 4: 1.9}) == 2
    assert fit.concurrent_loads({1: 1.0, 2: 1.1, 4: 1.7}) == 4  # 29% more: a clear gain


def test_loads_at_once_pool_the_median_round_of_every_architecture() -> None:
    # per level the median over rounds (mutations: the first round -> 4 from the classifier's 0.5 s
    # first round at 2; the mean -> 2 channels, 1.2 s), summed over the architectures that tried
    # every level (the detector with one expert tried only 1 at once on one server: left out)
    cls = _measurement("classifier", "cls_a", 1.0, 0.001, 0.002)
    det = _measurement("detector", "det_a", 11.0, 0.003, 0.004)
    cls.concurrent_wall_s = {1: [0.2, 0.21, 0.19], 2: [0.25, 0.22, 0.24], 4: [0.5, 0.5, 0.9]}
    det.concurrent_wall_s = {1: [0.3, 0.3, 0.3]}
    cls.spread_wall_s = {1: [0.2, 0.2, 0.2], 2: [0.3, 0.5, 0.32], 4: [0.6, 0.55, 0.6]}
    det.spread_wall_s = {1: [0.3, 0.3, 0.3], 2: [0.42, 0.4, 0.4], 4: [0.7, 0.8, 0.7]}
    assert build.pooled_walls([cls.concurrent_wall_s, det.concurrent_wall_s]) == {
        1: pytest.approx(0.2), 2: pytest.approx(0.24), 4: pytest.approx(0.5)}
    assert build.pooled_walls([cls.spread_wall_s, det.spread_wall_s]) == {
        1: pytest.approx(0.5), 2: pytest.approx(0.72), 4: pytest.approx(1.3)}
    profile = build_profile("p", [cls, det], {"cls_a": 8, "det_a": 8}, "stock", None, {})
    assert profile.processor("cpu").concurrent_loads == 2  # 4: 0.5 s, 4% more than 2's rate
    assert profile.storage_concurrent_loads == 2  # 2: +39% over 1; 4: +11% over 2
    assert build.pooled_walls([]) == {} and build.pooled_walls([{}]) == {}


def test_activation_bytes_come_from_each_sizes_mean_over_the_passes() -> None:
    # five passes; at 16 items two put 6 MB more than the others (a bimodal peak): the mean per
    # size, 2.4 MB more at 16 (mutations: the median and the first pass only -> 0 more)
    m = _measurement("classifier", "cls_a", 1.0, 0.001, 0.002)
    odd: tuple[dict[int, int], ...] = ({}, {16: 6_000_000}, {}, {16: 6_000_000}, {})
    m.activation_bytes = {n: [n * 1_000_000 + o.get(n, 0) for o in odd] for n in (1, 2, 4, 8, 16)}
    cost = build_profile("p", [m], {"cls_a": 16}, "stock", None, {}).cost("classifier", "cpu")
    expected = fit.fit_linear([1.0, 2.0, 4.0, 8.0, 16.0], [1e6, 2e6, 4e6, 8e6, 18.4e6]).slope
    assert cost is not None and cost.activation_bytes_per_item == round(expected)
    assert cost.peak_bytes == (cost.weight_bytes or 0) + 18_400_000  # weight + the mean growth at max_batch 16


_CONFIG = """name: "{name}"
max_batch_size: 8
input {{ name: "image" data_type: TYPE_FP32 dims: 3 dims: 4 dims: 4 }}
output {{ name: "logits" data_type: TYPE_FP32 dims: 2 }}
instance_group {{ count: 1 kind: KIND_CPU }}
backend: "coserve_ort"
"""


class RecordingAdapter:
    """An adapter that answers at once and records what it was asked (the profiler's order)."""

    def __init__(self, tag: str = "a", calls: list[tuple[str, str, object]] | None = None) -> None:
        self.tag = tag
        self.calls: list[tuple[str, str, object]] = [] if calls is None else calls

    async def infer(self, name: str, inputs: Mapping[str, object]) -> None:
        [batch] = inputs.values()
        self.calls.append((self.tag, "infer", batch.shape[0]))  # type: ignore[attr-defined]

    async def load(self, name: str, config: object) -> None:
        self.calls.append((self.tag, "load", name))

    async def unload(self, name: str) -> None:
        self.calls.append((self.tag, "unload", name))


def _profiler(tmp_path, plan, adapter, peers=()):  # type: ignore[no-untyped-def]
    from profiler.measure import ArchProfiler

    for name in ("e0", "e1", "e2", "e3"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.pbtxt").write_text(_CONFIG.format(name=name))
    return ArchProfiler(adapter, None, tmp_path, plan, peers=peers)  # type: ignore[arg-type]


def test_the_sweep_runs_interleaved_rounds_of_every_size(tmp_path) -> None:
    # one unmeasured run of each size, then rounds of one inference per size (mutation: size after
    # size -> the calls come grouped); sizes capped by the model's max_batch_size (8)
    import asyncio

    from profiler.measure import Plan

    adapter = RecordingAdapter()
    profiler = _profiler(tmp_path, Plan(infer_reps=3, batch_sizes=(1, 4, 16)), adapter)
    m = ArchMeasurement("classifier", "cpu", "e0", 1)
    asyncio.run(profiler._sweep(m, "e0"))
    assert [c[2] for c in adapter.calls] == [1, 4, 8] * 4
    assert sorted(m.batch_latency_s) == [1, 4, 8] and all(len(v) == 3 for v in m.batch_latency_s.values())


def test_loads_at_once_run_in_rounds_over_the_levels(tmp_path) -> None:
    # every round tries each level once, on one server then spread over servers (mutation: level
    # after level -> 1, 1, 2, 2 ...); each level keeps one wall time per round
    import asyncio

    from profiler.measure import Plan

    calls: list[tuple[str, str, object]] = []
    main_, peer = RecordingAdapter("main", calls), RecordingAdapter("peer", calls)
    profiler = _profiler(tmp_path, Plan(concurrency=(1, 2), concurrency_reps=2), main_, peers=[peer])
    m = ArchMeasurement("classifier", "cpu", "e0", 1)
    asyncio.run(profiler._concurrency(m, "cpu", ["e0", "e1", "e2", "e3"]))
    loads = [(tag, name) for tag, what, name in calls if what == "load"]
    one_round = [("main", "e0"), ("main", "e0"), ("main", "e1"), ("main", "e0"), ("main", "e0"), ("peer", "e1")]
    assert loads == one_round * 2
    assert {k: len(v) for k, v in m.concurrent_wall_s.items()} == {1: 2, 2: 2}
    assert {k: len(v) for k, v in m.spread_wall_s.items()} == {1: 2, 2: 2}


def test_an_unload_triton_leaves_unloading_with_its_processes_gone_is_counted_not_fatal(tmp_path) -> None:
    # the model's processes gone: memory is back, the profile goes on and counts it (mutation:
    # re-raise -> the profile fails); a process still alive: the timeout stands
    import asyncio

    from orchestrator.errors import ModelUnloadTimeoutError
    from profiler.measure import Plan

    class Stuck(RecordingAdapter):
        def __init__(self, alive: list[int]) -> None:
            super().__init__()
            self.process_probe = lambda name: alive

        async def unload(self, name: str) -> None:
            raise ModelUnloadTimeoutError(f"model {name!r} not gone")

    gone = Stuck([])
    profiler = _profiler(tmp_path, Plan(), gone)
    m = ArchMeasurement("classifier", "cpu", "e0", 1)
    asyncio.run(profiler._unload(m, "e0"))
    assert profiler.stuck_unloads == 1 and m.unload_s == [] and m.unload_cpu_s == []
    profiler.adapter = Stuck([4242])  # type: ignore[assignment]
    with pytest.raises(ModelUnloadTimeoutError):
        asyncio.run(profiler._unload(m, "e0"))


def test_every_field_of_a_plan_shows_in_its_description() -> None:
    """A cached profile is reused for a plan only when ``measured.plan`` reads the same
    (``orchestrator.bench.ensure_profile``), so two plans that differ anywhere must read apart
    (mutation killed: a field left out of ``Plan.describe``, as ``busy_reps`` once was)."""
    from dataclasses import fields, replace

    from profiler.measure import Plan

    base = Plan()
    for f in fields(Plan):
        value = getattr(base, f.name)
        other = (*value, 64) if isinstance(value, tuple) else value + 1
        assert replace(base, **{f.name: other}).describe() != base.describe(), f.name


def test_the_servers_host_growth_is_reserved_off_a_cpu_budget_only() -> None:
    # the server's growth is host PSS; a GPU executor's budget is device memory, which the serve-
    # time GPU watch measures with the server's own device growth (mutation: the same figure for
    # every kind, as before)
    cpu = _measurement("classifier", "cls_a", 1.0, 0.001, 0.002)
    gpu = _measurement("classifier", "cls_a", 1.0, 0.001, 0.002)
    gpu.kind = "gpu"
    profile = build_profile("p", [cpu, gpu], {"cls_a": 8}, "stock", 30_000_000, {}, server_growth_bytes=5_000_000)
    assert profile.processor("cpu").server_growth_bytes == 5_000_000
    assert not profile.processor("gpu").server_growth_bytes
