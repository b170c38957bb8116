"""Small deterministic scenarios: the policies' known effects, the bounds, the features."""

from __future__ import annotations

import pytest

from orchestrator.simulate.engine import simulate
from orchestrator.simulate.report import run_report

from .factories import make_config, make_profile, make_workload

pytestmark = pytest.mark.sim

PROFILE = make_profile()


def test_coserve_beats_the_samba_baselines_on_a_small_board() -> None:
    wl = make_workload(types=80, requests=500)
    cfg = make_config((8, 8, 8), 20)
    rep = run_report(
        wl, cfg, PROFILE, ["coserve", "samba-lru", "samba-fifo", "samba-parallel", "none", "em-ra"]
    )
    r = rep.results
    for base in ("samba-lru", "samba-fifo", "samba-parallel"):
        assert r["coserve"].throughput_img_s > 2 * r[base].throughput_img_s, base
        assert r["coserve"].switches < r[base].switches, base
    assert r["none"].throughput_img_s < r["em-ra"].throughput_img_s < r["coserve"].throughput_img_s
    # the bounds: nothing beats all-resident; the compulsory bound loads at most what coserve loads
    assert r["coserve"].throughput_img_s <= r["compulsory"].throughput_img_s
    assert r["compulsory"].throughput_img_s <= r["all-resident"].throughput_img_s
    assert r["compulsory"].switches <= r["coserve"].switches
    assert r["all-resident"].switches == 0
    # warm start (the default): every policy starts from the state a prior task left
    assert r["coserve"].initial_loads > 0 and r["samba-lru"].initial_loads > 0


def test_cold_start_starts_every_policy_empty_and_times_the_placement() -> None:
    wl = make_workload(types=80, requests=500)
    cfg = make_config((8, 8, 8), 20)
    rep = run_report(wl, cfg, PROFILE, ["coserve", "samba-lru"], warmup_tasks=0)
    r = rep.results
    assert r["coserve"].initial_loads == 0 and r["samba-lru"].initial_loads == 0
    # coserve's placement loads are issued at the first arrival and counted like any other
    assert r["coserve"].switches >= len(wl.distinct_experts())
    warm = run_report(wl, cfg, PROFILE, ["coserve"], warmup_tasks=1).results
    assert warm["coserve"].throughput_img_s > r["coserve"].throughput_img_s
    assert r["compulsory"].switches == len(wl.distinct_experts())


def test_distinct_experts_and_usage_cdf_of_the_calibrated_mix() -> None:
    from orchestrator.simulate.workload import CALIBRATED_CUTOFF, CALIBRATED_S, mix_weights

    w = mix_weights(352, CALIBRATED_S, CALIBRATED_CUTOFF)
    assert 0.55 <= sum(w[:35]) <= 0.68  # the paper's usage CDF: top 35 experts carry ~60%
    expected_distinct = sum(1 - (1 - p) ** 2500 for p in w)
    assert 180 <= expected_distinct <= 210
    zipf = mix_weights(352, 1.0, None)
    assert sum(1 - (1 - p) ** 2500 for p in zipf) > 250  # why a plain Zipf law does not fit


def test_starvation_guard_bounds_the_worst_wait() -> None:
    # one GPU executor, every expert resident; one type carries ~90% of a stream slightly above what
    # its max batches sustain, so its arranged group never empties and the rare types starve
    wl = make_workload(types=10, requests=1500, interval_s=0.007, zipf=4.0, detectors=0)
    cfg = make_config((30,), None)
    bound = 0.5
    free = simulate(wl, cfg, PROFILE, "em-ra")
    guarded = simulate(wl, cfg.with_features(starvation_bound_s=bound), PROFILE, "em-ra")
    one_batch = 16 * 0.0064 + 0.0086  # the max batch in flight when a step crosses the bound
    assert free.max_wait_s > 2 * (bound + one_batch)
    assert guarded.max_wait_s <= bound + one_batch + 1e-9
    assert guarded.throughput_img_s >= 0.98 * free.throughput_img_s
    assert guarded.completed == free.completed == 1500


def test_starvation_guard_keeps_the_run_whole_with_detectors() -> None:
    wl = make_workload(types=30, requests=400, detectors=2, detector_share=0.8)
    base = make_config((4, 4), 8)
    free = simulate(wl, base, PROFILE, "coserve")
    guarded = simulate(wl, base.with_features(starvation_bound_s=2.0), PROFILE, "coserve")
    assert guarded.completed == free.completed == 400


def test_prefetch_loads_are_counted_and_hit() -> None:
    # executors with room to spare next to the placement: the likely detector is prefetched
    wl = make_workload(types=30, requests=300, detectors=4, detector_share=0.8)
    off = simulate(wl, make_config((5, 5, 5), None), PROFILE, "coserve")
    res = simulate(wl, make_config((5, 5, 5), None, prefetch=True), PROFILE, "coserve")
    assert off.prefetch_loads == 0
    assert 0 < res.prefetch_hits <= res.prefetch_loads
    assert res.completed == 300


def test_cpu_cache_tier_turns_disk_loads_into_cpu_loads() -> None:
    from dataclasses import replace

    wl = make_workload(types=80, requests=500)
    cfg = make_config((4, 4), None)
    without = simulate(wl, cfg, PROFILE, "coserve")
    cached = simulate(
        wl, replace(cfg, cpu_cache_bytes=int(60 * 178.6e6)).with_features(cpu_cache=True), PROFILE, "coserve"
    )
    assert without.loads_by_tier.get("cpu", 0) == 0
    assert cached.loads_by_tier.get("cpu", 0) > 0
    assert cached.switches < without.switches


def test_online_probabilities_follow_a_mix_change() -> None:
    from orchestrator.simulate.engine import Simulation

    wl = make_workload(types=80, requests=1200, change_at=600, interval_s=0.03)
    assert len(wl.phases) == 2 and wl.phases[0][1] != wl.phases[1][1]
    cfg = make_config((6, 6), 10)
    oracle_sim = Simulation(wl, cfg, PROFILE, "coserve", oracle_probabilities=True)
    oracle = oracle_sim.run()
    assert oracle_sim.graph.usage_prob("cls_t000") == wl.phases[1][1]["cls_t000"]
    online_sim = Simulation(
        wl, cfg.with_features(online_probabilities=True, online_half_life=150), PROFILE, "coserve"
    )
    online = online_sim.run()
    # the learnt probabilities ended close to the new mix, far from the old one
    new, old = wl.phases[1][1], wl.phases[0][1]
    err_new = sum(abs(online_sim.graph.usage_prob(e) - p) for e, p in new.items())
    err_old = sum(abs(online_sim.graph.usage_prob(e) - p) for e, p in old.items())
    assert err_new < err_old
    assert online.throughput_img_s >= 0.9 * oracle.throughput_img_s


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"requests": 0}, "requests"),
        ({"requests": -3}, "requests"),
        ({"interval_s": -0.003}, "interval_ms"),
        ({"interval_s": float("nan")}, "interval_ms"),
        ({"interval_s": float("inf")}, "interval_ms"),
    ],
)
def test_coe_workload_refuses_bad_requests_and_intervals(kw: dict[str, float], field: str) -> None:
    from orchestrator.errors import ConfigError
    from orchestrator.simulate.workload import workload_from_coe
    from tests.unit.core.factories import make_coe

    args: dict[str, float] = {"requests": 20, "interval_s": 0.004, **kw}
    with pytest.raises(ConfigError) as ei:
        workload_from_coe(make_coe(types=4), PROFILE, int(args["requests"]), args["interval_s"], 1, "p")
    assert ei.value.field == field


@pytest.mark.parametrize(
    ("kw", "field"), [({"zipf": float("nan")}, "zipf"), ({"interval_s": float("nan")}, "interval_ms")]
)
def test_synthetic_workload_refuses_nan(kw: dict[str, float], field: str) -> None:
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError) as ei:
        make_workload(types=10, requests=20, **kw)
    assert ei.value.field == field
