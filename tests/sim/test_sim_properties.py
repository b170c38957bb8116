"""Invariants over random workloads, budgets, policies and features."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.features import Features
from orchestrator.core.policies import POLICIES
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.simulate.engine import Simulation
from orchestrator.simulate.workload import build_workload

from .factories import EXPERT, make_profile, make_spec

pytestmark = pytest.mark.sim

PROFILE = make_profile()


@st.composite
def scenarios(draw: st.DrawFn) -> tuple:
    spec = make_spec(
        types=draw(st.integers(3, 40)),
        requests=draw(st.integers(5, 250)),
        interval_s=draw(st.sampled_from([0.0, 0.001, 0.004, 0.02])),
        detectors=draw(st.integers(0, 3)),
        detector_share=draw(st.floats(0.0, 1.0)),
        zipf=draw(st.one_of(st.none(), st.floats(0.0, 2.0))),
        seed=draw(st.integers(0, 10_000)),
    )
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
    )
    config = ServeConfig(executors=tuple(execs), cpu_cache_bytes=cache, features=features)
    policy = draw(st.sampled_from(sorted(POLICIES)))
    failure_rate = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5]))
    return spec, config, policy, failure_rate


@given(scenarios())
def test_invariants_hold_on_random_workloads(case: tuple) -> None:
    spec, config, policy, failure_rate = case
    wl = build_workload(spec, PROFILE)
    # a pinned expert is never evicted: the pool raises IllegalTransitionError if the core tries,
    # and the simulator records any unload of an expert with a running batch as a violation
    sim = Simulation(wl, config, PROFILE, policy, check_invariants=True, load_failure_rate=failure_rate)
    res = sim.run()
    # no budget exceeded, no subsequent step before its preliminary step, nothing run while not ready
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
    # a subsequent step ran exactly for the requests whose verdict called for it
    assert res.switches == res.loads_by_tier.get("disk", 0)
    if failure_rate == 0.0:
        assert all("failed" not in reason for reason in res.rejected.values())


@given(scenarios())
def test_simulation_is_deterministic(case: tuple) -> None:
    spec, config, policy, failure_rate = case
    a = Simulation(
        build_workload(spec, PROFILE), config, PROFILE, policy, load_failure_rate=failure_rate
    ).run()
    b = Simulation(
        build_workload(spec, PROFILE), config, PROFILE, policy, load_failure_rate=failure_rate
    ).run()
    assert a.summary() == b.summary()
    assert a.latencies == b.latencies
