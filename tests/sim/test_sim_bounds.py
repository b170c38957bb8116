"""The two bounds: exact values where they can be worked out by hand, and the cases that broke the
old compulsory bound (docs/simulator.md, "Bounds")."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.core.profile import CostProfile, parse_profile
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.simulate.bounds import compute_bounds
from orchestrator.simulate.engine import simulate
from orchestrator.simulate.presets import load_preset
from orchestrator.simulate.workload import PAPER_TASKS, Workload, build_workload

from .factories import EXPERT, make_spec

pytestmark = pytest.mark.sim

# CPU disk loads (0.2 s) are faster than GPU disk loads (1.0 s); two loads at a time
FAST_CPU = parse_profile(
    {
        "storage": {"concurrent_loads": 2},
        "architectures": {
            "resnet101": {
                "gpu": {
                    "k_s": 0.01,
                    "b_s": 0.02,
                    "max_batch": 8,
                    "load_time_s": {"disk": 1.0, "cpu": 0.05},
                    "weight_bytes": EXPERT,
                },
                "cpu": {
                    "k_s": 0.03,
                    "b_s": 0.02,
                    "max_batch": 4,
                    "load_time_s": {"disk": 0.2},
                    "weight_bytes": EXPERT,
                },
            },
            "yolov5m": {
                "gpu": {"k_s": 0.01, "b_s": 0.02, "load_time_s": {"disk": 1.0}, "weight_bytes": EXPERT}
            },
            "yolov5l": {
                "gpu": {"k_s": 0.01, "b_s": 0.02, "load_time_s": {"disk": 1.0}, "weight_bytes": EXPERT}
            },
        },
    },
    "fast-cpu",
)
BOX = ServeConfig(
    executors=(ExecutorConfig("gpu0", "gpu", 4 * EXPERT), ExecutorConfig("cpu0", "cpu", 6 * EXPERT))
)


def test_compulsory_charges_the_fastest_load_of_any_executor_from_time_zero() -> None:
    wl = build_workload(make_spec(types=30, requests=60, interval_s=0.0, detectors=0), FAST_CPU)
    n = len(wl.distinct_experts())
    assert n > 20
    cold = compute_bounds(wl, BOX, FAST_CPU, start_empty=True)
    # every needed expert once at 0.2 s (the CPU's), two at a time, then one batch of one (GPU)
    assert cold.compulsory_s == pytest.approx(n * 0.2 / 2 + 0.03)
    assert cold.compulsory_loads == n and cold.start_resident == 0
    # warm: the best start holds as many as the largest layout's memory: samba-lru's one GPU
    # executor (4) plus the CPU memory as its cache (6) = 10 experts, any 10 of them
    warm = compute_bounds(wl, BOX, FAST_CPU)
    assert warm.start_resident == 10 and warm.compulsory_loads == n - 10
    assert warm.compulsory_s == pytest.approx((n - 10) * 0.2 / 2 + 0.03)


def test_all_resident_is_the_arrival_or_the_fluid_work_whichever_binds() -> None:
    wl = build_workload(make_spec(types=5, requests=80, interval_s=0.0, detectors=0), FAST_CPU)
    b = compute_bounds(wl, BOX, FAST_CPU)
    # everything at once: 80 items on the fastest layout, samba-parallel's two GPU executors at
    # K + B/max_batch = 0.0125 s per item each: 80 * 0.0125 / 2 = 0.5 s
    assert b.all_resident_s == pytest.approx(80 * (0.01 + 0.02 / 8) / 2)
    spread = build_workload(make_spec(types=5, requests=80, interval_s=0.5, detectors=0), FAST_CPU)
    b = compute_bounds(spread, BOX, FAST_CPU)
    assert b.all_resident_s == pytest.approx(79 * 0.5 + 0.03)  # the last arrival + one batch of one


def test_issue_example_coserve_stays_below_compulsory_and_a_useless_gpu_changes_nothing() -> None:
    pre = load_preset("paper-uma")
    spec = replace(
        PAPER_TASKS["B1"], types=352, requests=100, zipf=1.5, detectors=12, detector_share=0, seed=171
    )
    wl = build_workload(spec, pre.profile)
    cfg = pre.config("B")
    for warmup in (0, 1):
        co = simulate(wl, cfg, pre.profile, "coserve", warmup_tasks=warmup)
        b = compute_bounds(wl, cfg, pre.profile, start_empty=warmup == 0)
        assert co.makespan_s >= b.compulsory_s
    cpu_only = ServeConfig(executors=(ExecutorConfig("cpu0", "cpu", 2 * 10**9),))  # < the 27 needed
    tiny_gpu = replace(cpu_only, executors=(ExecutorConfig("gpu0", "gpu", 10**8), *cpu_only.executors))
    for start_empty in (True, False):
        a = compute_bounds(wl, cpu_only, pre.profile, start_empty=start_empty)
        b = compute_bounds(wl, tiny_gpu, pre.profile, start_empty=start_empty)
        assert b.compulsory_s == a.compulsory_s


def test_an_expert_left_out_costs_at_least_its_own_load_and_batch() -> None:
    wl = build_workload(make_spec(types=6, requests=12, interval_s=0.0, detectors=0), FAST_CPU)
    n = len(wl.distinct_experts())
    one_short = ServeConfig(executors=(ExecutorConfig("gpu0", "gpu", (n - 1) * EXPERT),))
    b = compute_bounds(wl, one_short, FAST_CPU)
    assert b.compulsory_loads == 1
    # one GPU disk load (1.0 s, no CPU executor in any layout) then its batch of one: the two load
    # channels do not help a single load (the fractional share would say 1.0 / 2 + 0.03)
    assert b.compulsory_s == pytest.approx(1.0 + 0.03)


def test_warmup_tasks_come_from_the_same_mix_with_other_seeds() -> None:
    from orchestrator.simulate.engine import Simulation

    wl = build_workload(make_spec(types=30, requests=200), FAST_CPU)
    sim = Simulation(wl, BOX, FAST_CPU, "coserve", warmup_tasks=2)
    a, b = sim.warmups
    assert a.routes == b.routes == wl.routes and a.type_mix == wl.type_mix
    assert len(a.requests) == len(wl.requests) and a.interval_s == wl.interval_s
    assert len({tuple(x.request_types) for x in (a, b, wl)}) == 3  # three different draws
    again = Simulation(wl, BOX, FAST_CPU, "samba-lru", warmup_tasks=2).warmups
    assert [x.request_types for x in again] == [a.request_types, b.request_types]  # same for every policy


def _one_cpu_box(
    cores: int, channels: int, *, k: float, b: float, mb: int, busy_s: float, idle_s: float, cpu_s: float
) -> tuple[CostProfile, ServeConfig, Workload]:
    """A shared-cores profile (every architecture the same CPU costs), one CPU executor holding
    three experts, and a 40-request burst over 20 types without detectors."""
    cost = {
        "k_s": k, "b_s": b, "max_batch": mb, "load_time_s": {"disk": busy_s},
        "load_time_idle_s": idle_s, "load_cpu_s": cpu_s, "weight_bytes": EXPERT,
    }
    data = {
        "host": {"cpu_cores": cores},
        "storage": {"concurrent_loads": channels},
        "architectures": {arch: {"cpu": dict(cost)} for arch in ("resnet101", "yolov5m", "yolov5l")},
    }
    profile = parse_profile(data, "shared-cores")
    box = ServeConfig(executors=(ExecutorConfig("cpu0", "cpu", 3 * EXPERT),))
    return profile, box, build_workload(make_spec(types=20, requests=40, interval_s=0.0, detectors=0), profile)


def test_with_shared_cores_the_bound_charges_the_idle_load_time_a_lone_load_takes() -> None:
    """Shared cores (simulate.cpu): a load alone takes its idle time (0.3 s here), shorter than
    the busy figure (1.0 s); a bound charging 1.0 s was beaten by coserve (kills: the busy one)."""
    profile, box, wl = _one_cpu_box(2, 1, k=0.002, b=0.002, mb=8, busy_s=1.0, idle_s=0.3, cpu_s=0.3)
    n = len(wl.distinct_experts())
    b = compute_bounds(wl, box, profile, start_empty=True)
    assert b.compulsory_s == pytest.approx(n * 0.3 + 0.004)
    res = simulate(wl, box, profile, "coserve", warmup_tasks=0)
    assert res.makespan_s >= b.compulsory_s - 1e-9


def test_with_shared_cores_the_cpu_work_no_policy_avoids_bounds_the_makespan() -> None:
    """One core, four storage channels: the loads' CPU seconds (0.3 s each, on the one core), not
    the channels (0.1 s each, four at once), set the bound, plus each item's CPU work; no policy
    beats it (kills: dropping the CPU term, dividing by the channels instead of the cores, or
    leaving the compute out)."""
    k, b, mb = 0.002, 0.004, 8
    profile, box, wl = _one_cpu_box(1, 4, k=k, b=b, mb=mb, busy_s=0.1, idle_s=0.1, cpu_s=0.3)
    n = len(wl.distinct_experts())
    bound = compute_bounds(wl, box, profile, start_empty=True)
    work = n * 0.3 + 40 * (k + b / mb)
    assert bound.cpu_work_s == pytest.approx(work)
    assert bound.channels_s == pytest.approx(n * 0.1 / 4 + k + b)
    assert bound.compulsory_s == pytest.approx(work)
    for policy in ("coserve", "coserve+", "samba-lru"):
        res = simulate(wl, box, profile, policy, warmup_tasks=0)
        assert res.makespan_s >= bound.compulsory_s - 1e-9, policy
    # without the shared-cores model the same costs are bound by the channels alone
    plain = compute_bounds(wl, box, replace(profile, host_cpu_cores=None), start_empty=True)
    assert plain.cpu_work_s == 0.0 and plain.compulsory_s == pytest.approx(plain.channels_s)


def test_the_compulsory_bound_is_the_smallest_of_each_layouts_own() -> None:
    """A policy runs on one layout, so the bound is each layout's own (its memory *and* its
    executors) at the smallest, not the roomiest layout's start beside the fastest layout's
    compute. Two GPU executors of two experts each (a CUDA context of one more): Samba-CoE's one
    process holds all five needed experts but computes 40 items alone (40 x 0.04 s = 1.6 s); the
    two-executor layouts compute them in 0.8 s but hold four, so one expert loads (1.0 s) before
    its batch (0.04 s): 1.04 s. Mixing the two gave 0.8 s (mutations killed: the roomiest start
    with the best all-resident; the largest of the layouts' bounds, which coserve beats)."""
    gpu = {"k_s": 0.04, "b_s": 0.0, "max_batch": 8, "load_time_s": {"disk": 1.0}, "weight_bytes": EXPERT}
    profile = parse_profile(
        {"storage": {"concurrent_loads": 2},
         "architectures": {a: {"gpu": dict(gpu)} for a in ("resnet101", "yolov5m", "yolov5l")}},
        "slow-gpu",
    )
    box = ServeConfig(
        executors=(ExecutorConfig("gpu0", "gpu", 2 * EXPERT), ExecutorConfig("gpu1", "gpu", 2 * EXPERT)),
        gpu_context_bytes=EXPERT,
    )
    wl = build_workload(make_spec(types=5, requests=40, interval_s=0.0, detectors=0), profile)
    assert len(wl.distinct_experts()) == 5
    b = compute_bounds(wl, box, profile)
    assert b.all_resident_s == pytest.approx(0.8)
    assert b.compulsory_s == pytest.approx(1.04)
    # switches: Samba-CoE's one process may start with all five, so no policy is sure to load one
    assert b.compulsory_loads == 0 and b.start_resident == 5
    # the binding layout (two executors of two) starts with four (mutation: the roomiest's five)
    assert b.binding_start_resident == 4
    for policy in ("coserve", "coserve+", "samba-lru", "samba-parallel", "em-ra"):
        res = simulate(wl, box, profile, policy)
        assert res.makespan_s >= b.compulsory_s - 1e-9, policy


def test_no_bound_where_no_executor_can_run_a_needed_expert() -> None:
    """A profile with GPU costs only and CPU executors: every request is rejected, and the bounds
    must not read as a figure (they were 2e13 img/s: makespans of 1e-12 s). Mutation killed: the
    old 1e-12 makespans, or the note left out."""
    from orchestrator.simulate.report import format_table, run_report

    gpu = {"k_s": 0.01, "b_s": 0.0, "max_batch": 8, "load_time_s": {"disk": 0.2}, "weight_bytes": EXPERT}
    profile = parse_profile(
        {"storage": {"concurrent_loads": 1},
         "architectures": {a: {"gpu": dict(gpu)} for a in ("resnet101", "yolov5m", "yolov5l")}},
        "gpu-only",
    )
    box = ServeConfig(executors=(ExecutorConfig("cpu0", "cpu", 100 * EXPERT),))
    wl = build_workload(make_spec(types=3, requests=12, interval_s=0.01, detectors=0), profile)
    b = compute_bounds(wl, box, profile)
    assert b.unrunnable == tuple(sorted(wl.distinct_experts()))
    assert b.row("compulsory", 12).throughput_img_s == 0.0
    report = run_report(wl, box, profile, ["coserve"])
    assert len(report.results["coserve"].rejected) == 12
    table = format_table(report)
    assert "n/a" in table and "no bounds: no executor can run" in table
    assert all(r.throughput_img_s == 0.0 for r in report.results.values())
