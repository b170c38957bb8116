"""``coserve bench`` without Triton: the budget split and layouts, the JSON's shape, the simulator's
side (the same request sequence, the real warm-up), the memory sampler on this process."""

from __future__ import annotations

import json
import mmap
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from exporter.generate import generate, preset_options
from orchestrator.bench import (
    ALL_RESIDENT,
    COMPULSORY,
    FIELDS,
    BenchResult,
    RunOutcome,
    all_resident_config,
    bench_workload,
    budget_serve_file,
    check_layouts,
    predict,
    sim_workload,
    split_budget,
)
from orchestrator.cli import build_parser
from orchestrator.core.layout import executors_for
from orchestrator.core.policies import PAPER_POLICIES, get_policy
from orchestrator.core.profile import parse_profile
from orchestrator.core.serve_config import ExecutorConfig
from orchestrator.engine.memory_sampler import MemorySampler
from orchestrator.errors import ConfigError
from orchestrator.simulate.engine import SimResult

MB = 1_000_000
COST = {"k_s": 0.001, "b_s": 0.002, "max_batch": 8, "load_time_s": {"disk": 0.2}, "weight_bytes": 50 * MB,
        "activation_bytes_per_item": 100_000}
PROFILE = parse_profile(
    {"name": "t", "storage": {"concurrent_loads": 1},
     "processors": {"cpu": {"concurrent_loads": 1, "unload_time_s": 0.03}},
     "architectures": {"classifier": {"cpu": COST}, "detector": {"cpu": COST}}},
    "test-profile",
)
COE = generate(preset_options("demo", types=8, detectors=1, detector_share=0.5, components=60, image_size=16))


def test_the_budget_is_split_over_two_cpu_executors_exactly() -> None:
    assert split_budget(1001) == [501, 500]
    assert sum(split_budget(10**9 + 7, 3)) == 10**9 + 7
    with pytest.raises(ConfigError, match="at least 2"):
        split_budget(1)


def test_layouts_samba_lru_gets_one_executor_with_all_of_it_and_parallel_two() -> None:
    spec = budget_serve_file("coe.yaml", "repo", 1000 * MB)
    assert [(e.name, e.kind, e.budget_bytes) for e in spec.config.executors] == [
        ("cpu0", "cpu", 500 * MB), ("cpu1", "cpu", 500 * MB)]
    assert spec.executor_server == {"cpu0": "embedded_cpu0", "cpu1": "embedded_cpu1"}
    assert all(s.embedded for s in spec.servers.values())

    def layout(policy: str) -> list[tuple[str, int]]:
        execs, cache = executors_for(get_policy(policy), replace(spec.config, policy=policy))
        assert cache == 0
        return [(e.name, e.budget_bytes) for e in execs]

    assert layout("samba-lru") == [("cpu0", 1000 * MB)]
    assert layout("samba-parallel") == [("cpu0", 500 * MB), ("cpu1", 500 * MB)]
    assert layout("coserve") == [("cpu0", 500 * MB), ("cpu1", 500 * MB)]
    check_layouts(spec, PAPER_POLICIES)  # every paper policy can be hosted


def test_a_config_whose_executors_a_layout_cannot_find_is_refused() -> None:
    spec = budget_serve_file("coe.yaml", "repo", 1000 * MB)
    renamed = replace(spec, config=replace(spec.config, executors=(ExecutorConfig("a", "cpu", 1), ExecutorConfig("b", "cpu", 1))),
                      executor_server={"a": "embedded_cpu0", "b": "embedded_cpu1"})
    with pytest.raises(ConfigError, match="samba-lru runs on executor"):
        check_layouts(renamed, ["samba-lru"])


def test_all_resident_budgets_hold_every_expert() -> None:
    spec = budget_serve_file("coe.yaml", "repo", 100 * MB)
    big = all_resident_config(spec.config, COE, PROFILE)
    assert big.policy == "coserve"
    assert [e.name for e in big.executors] == ["cpu0", "cpu1"]
    assert all(e.budget_bytes >= len(COE.experts) * 50 * MB for e in big.executors)


def _run(name: str, policy: str, tp: float) -> RunOutcome:
    pred = SimResult(policy, 10, 10, {}, 1.0, tp * 1.1, 3, {"disk": 3}, 0, 0.1, 0.2, {}, 0.0)
    return RunOutcome(name, policy, 10, 0, 1.0, tp, 4, 0.01, 0.02, 123, {"cpu0": 100}, {"cpu0": 200}, {}, {}, [], [],
                      None, 4, 4, 0.5, 0.1, pred)


def test_the_json_is_flat_with_exactly_the_six_fields(tmp_path: Path) -> None:
    runs = {"coserve": _run("coserve", "coserve", 30.0), "samba-lru": _run("samba-lru", "samba-lru", 10.0),
            ALL_RESIDENT: _run(ALL_RESIDENT, "coserve", 50.0)}
    bound = SimResult(COMPULSORY, 10, 10, {}, 0.1, 100.0, 2, {"disk": 2}, 0, 0.001, 0.002, {}, 0.0)
    spec = budget_serve_file("coe.yaml", "repo", 100 * MB)
    result = BenchResult(runs, bound, tmp_path / "p.yaml", spec.config, None, 10, 200, 0.004)
    obj = json.loads(result.to_json())
    assert list(obj) == ["coserve", "samba-lru", ALL_RESIDENT, COMPULSORY]
    for name, row in obj.items():
        assert tuple(row) == FIELDS, name
    assert obj["coserve"] == {"throughput_img_s": 30.0, "switches": 4, "p50_latency_s": 0.01, "p99_latency_s": 0.02,
                              "peak_memory_bytes": 123, "predicted_throughput_img_s": 33.0}
    assert obj[COMPULSORY]["peak_memory_bytes"] is None
    assert obj[COMPULSORY]["predicted_throughput_img_s"] == obj[COMPULSORY]["throughput_img_s"] == 100.0
    assert runs["coserve"].over_budget() == {}
    assert replace(runs["coserve"], executor_peak_bytes={"cpu0": 201}).over_budget() == {"cpu0": (201, 200)}


def test_the_simulator_replays_the_sequence_as_sent_after_the_real_warm_up() -> None:
    wl = bench_workload(COE, 40, 0.004, 30, seed=3)
    assert len(wl.measured) == 40 and len(wl.warmup) == 30
    again = bench_workload(COE, 40, 0.004, 30, seed=3)  # the same for every run
    assert [r.component_type for r in again.measured] == [r.component_type for r in wl.measured]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(again.measured, wl.measured, strict=True))  # type: ignore[arg-type]
    ran = [i % 3 == 0 for i in range(40)]
    task = sim_workload(COE, PROFILE, wl.measured, ran, 0.004, "t")
    assert [r.preliminary for r in task.requests] == [COE.routing[r.component_type].classifier for r in wl.measured]
    assert [r.arrival_s for r in task.requests[:3]] == [0.0, 0.004, 0.008]
    assert all(task.verdicts[i] == (ran[i] and task.requests[i].subsequent is not None) for i in range(40))
    config = budget_serve_file("coe.yaml", "repo", 400 * MB).config
    cold = predict(task, None, config, PROFILE, "samba-lru")
    warm_task = sim_workload(COE, PROFILE, wl.warmup, [False] * 30, 0.004, "w")
    warm = predict(task, warm_task, config, PROFILE, "samba-lru")
    assert cold.completed == warm.completed == 40
    assert warm.switches <= cold.switches  # what the warm-up loaded is there at the start


def test_the_memory_sampler_sees_growth_over_idle_and_reports_its_cost() -> None:
    with MemorySampler({"cpu0": os.getpid()}, interval_s=0.2, quick_interval_s=0.05) as sampler:
        # 64 MB of new private pages: an anonymous mapping of its own, every page touched (an
        # array from the heap may reuse pages an earlier test freed but the heap kept resident,
        # and then grew the process by only 41-47 MB: the test failed 1 run in 3)
        block = mmap.mmap(-1, 64 * MB)
        for offset in range(0, 64 * MB, mmap.PAGESIZE):
            block[offset] = 1
        sampler.poke()
        time.sleep(0.5)
        block.close()
    report = sampler.report()
    assert report.idle_bytes["cpu0"] > 0
    assert report.lifetime_peak_bytes["cpu0"] >= 48 * MB
    # PSS at the start, the end and full refreshes; the poke reads the server by statm (module doc)
    assert report.pss_reads >= 2 and report.poked >= 1 and report.statm_reads >= 1
    assert report.max_gap_s < 0.5
    assert 0.0 <= report.cpu_share < 1.0 and report.wall_s > 0.4


def test_the_cli_parses_bench_and_refuses_mixed_sources(tmp_path: Path) -> None:
    args = build_parser().parse_args(["bench", "--coe", "c.yaml", "--repo", "r", "--budget-bytes", "1000",
                                      "--policy", "coserve", "--policy", "samba-lru", "--json", "o.json"])
    assert (args.requests, args.interval_ms, args.policy, args.cold_start) == (600, 4.0, ["coserve", "samba-lru"], False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--config", "s.yaml", "--coe", "c.yaml"])
    from orchestrator.cli import main

    assert main(["bench", "--coe", "c.yaml", "--repo", "r"]) == 2  # no budget: a usage error


def test_a_cached_profile_is_reused_only_when_measured_with_the_plan_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance benchmarks ask for the full plan; a cached quick profile is then measured
    again (mutation killed: the plan check dropped, the quick cache reused), while a caller asking
    for no plan (``coserve bench``) keeps reusing whatever current profile is cached."""
    import yaml

    import orchestrator.bench as bench
    import profiler.run
    from profiler.measure import Plan

    raw = {"name": "t", "storage": {"concurrent_loads": 1},
           "processors": {"cpu": {"concurrent_loads": 1, "unload_time_s": 0.03}},
           "architectures": {"classifier": {"cpu": COST}, "detector": {"cpu": COST}},
           "measured": {"plan": Plan.quick().describe()}}
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "profile.yaml").write_text(yaml.safe_dump(raw))
    spec = budget_serve_file(tmp_path / "coe.yaml", repo, 2)
    measured: list[Plan] = []

    class _Result:
        profile = PROFILE
        seconds = 0.0

    def fake_run(coe: object, repo: Path, kinds: object, plan: Plan, **kw: object) -> _Result:
        measured.append(plan)
        return _Result()

    monkeypatch.setattr(bench, "server_unload_mode", lambda fast_release=True: "fast-release")
    monkeypatch.setattr(profiler.run, "run_profile", fake_run)
    monkeypatch.setattr(profiler.run, "write_profile", lambda result, path: None)
    lines: list[str] = []
    bench.ensure_profile(spec, COE, say=lines.append)  # no plan asked: the cache is reused
    bench.ensure_profile(spec, COE, plan=Plan.quick(), say=lines.append)  # the cache's own plan
    assert measured == []
    bench.ensure_profile(spec, COE, plan=Plan(), say=lines.append)
    assert measured == [Plan()]
    assert any("measured.plan" in line for line in lines)
    assert lines[-1].startswith("cost profile") and "measuring a full cost profile" in lines[-2]


@pytest.mark.parametrize(("flags", "quick"), [([], False), (["--quick-profile"], True)])
def test_coserve_bench_asks_for_the_full_profile_plan_unless_told_quick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], quick: bool
) -> None:
    """Mutation killed: the CLI passing no plan (any cached quick profile reused) or ignoring the flag."""
    import orchestrator.bench as bench
    from orchestrator.cli import main
    from profiler.measure import Plan

    seen: list[object] = []

    def fake_run_bench(spec: object, **kw: object) -> BenchResult:
        seen.append(kw["profile_plan"])
        raise ConfigError("test", "stop", "here")  # a usage error ends the command cleanly

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    assert main(["bench", "--coe", "c.yaml", "--repo", str(tmp_path), "--budget-bytes", "1000", *flags]) == 2
    assert seen == [Plan.quick() if quick else Plan()]


def test_a_profile_the_serve_config_names_is_not_re_measured_for_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's profile file is theirs: ``coserve bench --config`` asking for the full plan
    uses it as it is rather than overwriting it (mutation killed: the plan check applied to it)."""
    import yaml

    import orchestrator.bench as bench
    import profiler.run
    from profiler.measure import Plan

    raw = {"name": "t", "storage": {"concurrent_loads": 1},
           "processors": {"cpu": {"concurrent_loads": 1, "unload_time_s": 0.03}},
           "architectures": {"classifier": {"cpu": COST}, "detector": {"cpu": COST}},
           "measured": {"plan": Plan.quick().describe()}}
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(raw))
    repo = tmp_path / "repo"
    repo.mkdir()
    spec = budget_serve_file(tmp_path / "coe.yaml", repo, 2, profile=mine)

    def no_run(*a: object, **kw: object) -> None:
        raise AssertionError("the operator's profile was re-measured")

    monkeypatch.setattr(bench, "server_unload_mode", lambda fast_release=True: "fast-release")
    monkeypatch.setattr(profiler.run, "run_profile", no_run)
    path, _ = bench.ensure_profile(spec, COE, plan=Plan())
    assert path == mine


def test_the_box_during_a_run_is_the_steal_share_of_the_cpu_time_between_the_marks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mutation killed: the share from the totals since boot instead of the deltas over the run."""
    import orchestrator.bench as bench

    readings = iter([(10, 1000), (20, 1100)])
    monkeypatch.setattr(bench, "_cpu_jiffies", lambda: next(readings))
    box = bench.box_during(bench.box_mark())
    assert box.steal_share == pytest.approx(0.1)
    assert len(box.load_avg_1m) == 2 and all(v >= 0 for v in box.load_avg_1m)
    monkeypatch.setattr(bench, "_cpu_jiffies", lambda: None)  # a kernel without /proc/stat
    assert bench.box_during(bench.box_mark()).steal_share is None
    real = bench._cpu_jiffies()
    assert real is None or 0 <= real[0] <= real[1]
