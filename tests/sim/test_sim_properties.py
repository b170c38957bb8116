"""Invariants over random workloads, budgets, profiles, policies, features and start modes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.features import Features
from orchestrator.core.policies import POLICIES
from orchestrator.core.profile import CostProfile, parse_profile
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.simulate.bounds import compute_bounds
from orchestrator.simulate.engine import Simulation
from orchestrator.simulate.workload import build_workload

from .factories import EXPERT, make_profile, make_spec

pytestmark = pytest.mark.sim

PROFILE = make_profile()


@st.composite
def profiles(draw: st.DrawFn) -> CostProfile:
    """Random costs; CPU loads are sometimes faster than GPU loads, unloads sometimes slow; and
    sometimes the shared-cores model (host.cpu_cores, CPU loads with their CPU seconds and an
    idle load time shorter or longer than the busy one: simulate.cpu)."""
    shared = draw(st.booleans())

    def cost(kind: str) -> dict[str, Any]:
        load: dict[str, float] = {"disk": draw(st.floats(0.05, 2.0))}
        if kind == "gpu" and draw(st.booleans()):
            load["cpu"] = draw(st.floats(0.005, 0.5))
        out: dict[str, Any] = {
            "k_s": draw(st.floats(0.001, 0.08)),
            "b_s": draw(st.floats(0.0, 0.05)),
            "max_batch": draw(st.integers(1, 16)),
            "load_time_s": load,
            "weight_bytes": int(draw(st.floats(0.4, 1.6)) * EXPERT),
            "activation_bytes_per_item": draw(st.sampled_from([0, 4_000_000, 16_000_000])),
        }
        if shared and kind == "cpu" and draw(st.booleans()):
            out["load_time_idle_s"] = load["disk"] * draw(st.floats(0.3, 1.5))
            out["load_cpu_s"] = out["load_time_idle_s"] * draw(st.floats(0.3, 1.8))
            out["load_watch_cores"] = draw(st.sampled_from([0.0, 0.1, 0.3]))
            out["first_batch_extra_s"] = draw(st.sampled_from([0.0, 0.03]))
        return out

    archs: dict[str, Any] = {}
    for arch in ("resnet101", "yolov5m", "yolov5l"):
        entry = {"gpu": cost("gpu")}
        if arch == "resnet101" or draw(st.booleans()):
            entry["cpu"] = cost("cpu")
        archs[arch] = entry
    procs = {
        kind: {
            "concurrent_loads": draw(st.integers(1, 3)),
            "unload_time_s": draw(st.sampled_from([0.005, 0.3, 1.1])),
        }
        for kind in ("gpu", "cpu")
    }
    data: dict[str, Any] = {
        "storage": {"concurrent_loads": draw(st.integers(1, 3))},
        "processors": procs,
        "architectures": archs,
    }
    if shared:
        data["host"] = {"cpu_cores": draw(st.integers(1, 3))}
        procs["cpu"]["unload_cpu_s"] = draw(st.sampled_from([0.0, 0.04]))
    return parse_profile(data, "random-profile")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Any, ...]:
    spec = make_spec(
        types=draw(st.integers(3, 40)),
        requests=draw(st.integers(5, 200)),
        interval_s=draw(st.sampled_from([0.0, 0.001, 0.004, 0.02])),
        detectors=draw(st.integers(0, 3)),
        detector_share=draw(st.floats(0.0, 1.0)),
        zipf=draw(st.one_of(st.none(), st.floats(0.0, 2.0))),
        seed=draw(st.integers(0, 10_000)),
    )
    profile = PROFILE if draw(st.booleans()) else draw(profiles())
    n_gpu = draw(st.integers(0, 3))
    execs = [ExecutorConfig(f"gpu{i}", "gpu", int(draw(st.floats(0.3, 8.0)) * EXPERT)) for i in range(n_gpu)]
    if n_gpu == 0 or draw(st.booleans()):
        execs.append(ExecutorConfig("cpu0", "cpu", int(draw(st.floats(0.3, 10.0)) * EXPERT)))
    cache = draw(st.sampled_from([0, 2 * EXPERT, 10 * EXPERT]))
    features = Features(
        starvation_bound_s=draw(st.one_of(st.none(), st.floats(0.05, 5.0))),
        prefetch=draw(st.booleans()),
        cpu_cache=cache > 0 and draw(st.booleans()),
        online_probabilities=draw(st.booleans()),
        online_half_life=draw(st.floats(5.0, 500.0)),
        queue_aware_eviction=draw(st.booleans()),
        lookahead_loading=draw(st.booleans()),
        serve_resident=draw(st.booleans()),
        unload_headroom=draw(st.booleans()),
        dedup_eviction=draw(st.booleans()),
        disk_aware_assign=draw(st.booleans()),
        batch_room=draw(st.booleans()),
    )
    config = ServeConfig(executors=tuple(execs), cpu_cache_bytes=cache, features=features)
    policy = draw(st.sampled_from(sorted(POLICIES)))
    failure_rate = draw(st.sampled_from([0.0, 0.0, 0.0, 0.1, 0.5]))
    warmup = draw(st.sampled_from([0, 1]))
    return spec, profile, config, policy, failure_rate, warmup


def _run(case: tuple[Any, ...]) -> tuple[Any, Simulation, Any]:
    spec, profile, config, policy, failure_rate, warmup = case
    wl = build_workload(spec, profile)
    sim = Simulation(wl, config, profile, policy, warmup_tasks=warmup, load_failure_rate=failure_rate)
    return wl, sim, sim.run()


@given(scenarios())
def test_invariants_hold_on_random_workloads(case: tuple[Any, ...]) -> None:
    wl, sim, res = _run(case)
    # the simulator's own ledger: no budget exceeded, nothing evicted while it runs, nothing run
    # while not loaded, no subsequent step before its preliminary step
    assert res.violations == []
    for name, peak in res.peak_bytes.items():
        assert peak <= sim.core.pool(name).budget_bytes
    # every request finishes or is rejected with a reason, never both
    done = set(sim.done_at)
    rejected = set(res.rejected)
    assert done | rejected == {r.id for r in wl.requests}
    assert not done & rejected
    assert all(reason for reason in res.rejected.values())
    assert sim.core.queued_steps() == 0 and sim.core.running_batches() == 0
    # a subsequent step ran exactly for the completed requests whose verdict called for it
    assert sim.subsequent_run & done == {r for r in done if wl.verdicts[r]}
    assert sim.subsequent_run <= done
    if case[4] == 0.0:
        assert all("failed" not in reason for reason in res.rejected.values())


@settings(max_examples=60)
@given(scenarios())
def test_no_policy_beats_either_bound(case: tuple[Any, ...]) -> None:
    """Both bounds, for the requests the policy completed and the start mode it ran in."""
    wl, sim, res = _run(case)
    _, profile, config, _, _, warmup = case
    b = compute_bounds(wl, config, profile, start_empty=warmup == 0, ids=set(sim.done_at))
    if not sim.done_at:
        return
    tol = 1e-9 * max(1.0, res.makespan_s)
    assert b.all_resident_s <= b.compulsory_s
    assert res.makespan_s >= b.compulsory_s - tol, (res.makespan_s, b)
    assert res.switches >= b.compulsory_loads
    assert all(lat >= f - tol for lat, f in zip(res.latencies, b.step_floor_s, strict=True))


@settings(max_examples=40)
@given(scenarios())
def test_simulation_is_deterministic(case: tuple[Any, ...]) -> None:
    a = _run(case)[2]
    b = _run(case)[2]
    assert a.summary() == b.summary()
    assert a.latencies == b.latencies


@st.composite
def cpu_boxes(draw: st.DrawFn) -> tuple[Any, ...]:
    """CPU-only boxes on the shared-cores model where the loads' CPU work, not the storage
    channels, is what limits (the bench board's case: multi-threaded loads on 1-4 cores)."""

    def cost() -> dict[str, Any]:
        idle = draw(st.floats(0.05, 0.4))
        return {
            "k_s": draw(st.floats(0.0005, 0.01)),
            "b_s": draw(st.floats(0.0005, 0.01)),
            "max_batch": draw(st.sampled_from([1, 4, 16])),
            "load_time_s": {"disk": idle * draw(st.floats(0.8, 2.0))},
            "load_time_idle_s": idle,
            "load_cpu_s": idle * draw(st.floats(0.5, 2.0)),
            "load_watch_cores": draw(st.sampled_from([0.0, 0.05])),
            "first_batch_extra_s": draw(st.sampled_from([0.0, 0.03])),
            "weight_bytes": int(draw(st.floats(0.5, 1.5)) * EXPERT),
        }

    data = {
        "host": {"cpu_cores": draw(st.integers(1, 4))},
        "storage": {"concurrent_loads": draw(st.integers(1, 4))},
        "processors": {"cpu": {"concurrent_loads": draw(st.integers(1, 4)), "unload_time_s": 0.03,
                               "unload_cpu_s": 0.03}},
        "architectures": {a: {"cpu": cost()} for a in ("resnet101", "yolov5m", "yolov5l")},
    }
    profile = parse_profile(data, "cpu-box")
    n = draw(st.integers(1, 3))
    execs = tuple(ExecutorConfig(f"cpu{i}", "cpu", int(draw(st.floats(1.5, 6.0)) * EXPERT)) for i in range(n))
    names = ("queue_aware_eviction", "lookahead_loading", "serve_resident", "unload_headroom",
             "dedup_eviction", "disk_aware_assign", "batch_room")
    config = ServeConfig(executors=execs, features=Features(**{k: draw(st.booleans()) for k in names}))
    spec = make_spec(
        types=draw(st.integers(10, 60)),
        requests=draw(st.integers(30, 200)),
        interval_s=draw(st.sampled_from([0.0, 0.004, 0.02])),
        detectors=draw(st.integers(0, 3)),
        detector_share=draw(st.floats(0.0, 1.0)),
        zipf=draw(st.sampled_from([None, 1.0, 1.5])),
        seed=draw(st.integers(0, 10_000)),
    )
    return spec, profile, config, draw(st.sampled_from(sorted(POLICIES))), 0.0, draw(st.sampled_from([0, 1]))


@settings(max_examples=40)
@given(cpu_boxes())
def test_no_policy_beats_the_cpu_work_bound_on_shared_cores(case: tuple[Any, ...]) -> None:
    """The compulsory bound's CPU-work part (docs/simulator.md, "Bounds"), where it binds most."""
    wl, sim, res = _run(case)
    _, profile, config, _, _, warmup = case
    if not sim.done_at:
        return
    b = compute_bounds(wl, config, profile, start_empty=warmup == 0, ids=set(sim.done_at))
    assert res.makespan_s >= b.compulsory_s - 1e-9 * max(1.0, res.makespan_s), (res.makespan_s, b)
    assert b.cpu_work_s <= b.compulsory_s
