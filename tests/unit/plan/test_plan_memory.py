"""Budgets from raw bytes: contexts, servers' idle memory and growth, cache tier, what does not fit."""

from __future__ import annotations

from orchestrator.core.profile import CostProfile, ProcessorSpec
from orchestrator.plan.memory import Candidate, Machine, Overheads, candidate_config, profile_overheads
from orchestrator.simulate.presets import Preset

from .conftest import GB, small_evaluator

MB = 1_000_000


def test_gpu_executors_split_the_device_after_their_contexts_and_cpu_executors_the_host(numa: Preset) -> None:
    ev = small_evaluator(numa, machine=Machine(6 * GB, (12 * GB,)))
    lay = ev.layout(Candidate(3, (1.0,)))
    assert lay is not None
    budgets = {e.name: e.budget_bytes for e in lay.written.executors}
    # (12 GB - 3 x 0.6 GB context) / 3
    assert budgets == {"gpu0": 3_400_000_000, "gpu1": 3_400_000_000, "gpu2": 3_400_000_000, "cpu0": 6 * GB}
    assert lay.written.gpu_context_bytes == 600_000_000
    assert lay.simulated == lay.written  # the presets' in-process executors grow by nothing


def test_a_cache_tier_takes_its_share_from_the_cpu_executors(numa: Preset) -> None:
    ev = small_evaluator(numa, machine=Machine(8 * GB, (12 * GB,)))
    lay = ev.layout(Candidate(1, (0.5, 0.5), cache_share=0.25))
    assert lay is not None
    cpus = [e.budget_bytes for e in lay.written.executors if e.kind == "cpu"]
    assert cpus == [3 * GB, 3 * GB] and lay.written.cpu_cache_bytes == 2 * GB
    assert lay.written.features.cpu_cache
    assert sum(cpus) + lay.written.cpu_cache_bytes <= 8 * GB


def test_embedded_servers_idle_memory_comes_off_the_host_and_growth_off_the_simulated_budget(numa: Preset) -> None:
    ev = small_evaluator(numa, machine=Machine(2 * GB))
    ev.overheads = Overheads(cpu_executor_bytes=100 * MB, growth_bytes={"cpu": 10 * MB})
    lay = ev.layout(Candidate(0, (0.5, 0.5)))
    assert lay is not None
    assert [e.budget_bytes for e in lay.written.executors] == [900 * MB, 900 * MB]
    assert [e.budget_bytes for e in lay.simulated.executors] == [890 * MB, 890 * MB]


def test_a_layout_whose_executor_cannot_hold_an_expert_and_a_max_batch_does_not_fit(numa: Preset) -> None:
    ev = small_evaluator(numa, machine=Machine(2 * GB, (1 * GB,)))
    assert ev.layout(Candidate(1, ())) is not None  # 0.4 GB: one 178.6 MB expert + a 256 MB batch
    assert ev.layout(Candidate(2, ())) is None  # 2 x 0.6 GB of contexts leave nothing
    assert candidate_config(Candidate(0, ()), ev.machine, ev.overheads, ev.profile, ev.graph, "coserve") is None


def test_measured_profile_overheads_name_where_each_figure_lives() -> None:
    prof = CostProfile("m", {"cpu": ProcessorSpec(server_idle_bytes=22 * MB, server_growth_bytes=9 * MB,
                                                   shared_bytes=40 * MB, overhead_fixed_bytes=60 * MB)})
    o = profile_overheads(prof)
    # inside each executor's budget: the server's growth and, once, the pages its model processes
    # share (mutation: the growth alone -> 9 MB, and the plan would promise memory it has not got)
    assert o.cpu_executor_bytes == 22 * MB and o.growth_bytes == {"cpu": 49 * MB} and o.gpu_context_bytes == 0
    assert "own model process" in o.notes[0] and "60.0 MB" in o.notes[0] and "40.0 MB of pages" in o.notes[0]
    native = profile_overheads(prof, gpu_context_bytes=500 * MB)
    assert native.gpu_context_bytes == 500 * MB and "per executor" in native.notes[-1]
