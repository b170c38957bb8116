"""The simulator's shared-cores model (``simulate.cpu``) and the first batch after a load.

Each test names the mutation it kills."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.core.graph import ExpertNode, TypeRoute
from orchestrator.core.profile import ArchCost, CostProfile, ProcessorSpec, load_profile_text, profile_to_data
from orchestrator.core.scheduler import Request
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.simulate.cpu import CpuShare
from orchestrator.simulate.engine import simulate
from orchestrator.simulate.workload import Workload


def test_jobs_run_at_their_caps_while_the_cores_suffice() -> None:
    # two one-core jobs on two cores: each ends after its own work (mutation: always share the
    # cores among all jobs -> 2 s each)
    cpu = CpuShare(2)
    cpu.add(0.0, 1.0, 1.0, "a")
    cpu.add(0.0, 1.0, 1.0, "b")
    assert cpu.scale() == 1.0 and cpu.next_end() == pytest.approx(1.0)
    assert [j.payload for j in cpu.pop_done(1.0)] == ["a", "b"]


def test_oversubscribed_jobs_slow_down_alike_and_speed_up_when_one_ends() -> None:
    # three one-core jobs on two cores run at 2/3 each; the short one (work 0.5) ends at 0.75,
    # then the two others run at full speed: 1 - 0.5 = 0.5 left -> end at 1.25 (mutations: no
    # advance before the rates change -> 1.5; rates not restored after an end -> 1.5)
    cpu = CpuShare(2)
    cpu.add(0.0, 1.0, 1.0, "a")
    cpu.add(0.0, 1.0, 1.0, "b")
    cpu.add(0.0, 0.5, 1.0, "c")
    assert cpu.scale() == pytest.approx(2 / 3)
    end = cpu.next_end()
    assert end is not None and end == pytest.approx(0.75)
    assert [j.payload for j in cpu.pop_done(end)] == ["c"]
    assert cpu.next_end() == pytest.approx(1.25)
    assert [j.payload for j in cpu.pop_done(1.25)] == ["a", "b"]
    assert cpu.done_work == pytest.approx(2.5)


def test_a_multithreaded_load_alone_takes_its_idle_time_and_two_share_the_cores() -> None:
    # a load of 0.3 CPU s that alone takes 0.2 s (cap 1.5 cores): alone 0.2 s; two at once on 2
    # cores (caps 3 > 2) take 0.3 s each, as the profiler's spread measurement saw (0.7x of two in
    # a row), and a batch beside them slows too (mutation: cap ignored -> 0.3 s alone)
    cpu = CpuShare(2)
    cpu.add(0.0, 0.3, 1.5, "load")
    assert cpu.next_end() == pytest.approx(0.2)
    two = CpuShare(2)
    two.add(0.0, 0.3, 1.5, "l1")
    two.add(0.0, 0.3, 1.5, "l2")
    assert two.next_end() == pytest.approx(0.3)


def test_an_endless_job_runs_until_removed_and_takes_its_share_meanwhile() -> None:
    # a load (1 core, work 1) beside a watch of 0.5 core and another one-core job on 1.5 cores...
    # here on 2 cores: caps 1 + 1 + 0.5 = 2.5 > 2, scale 0.8: the finite jobs end at 1.25; the
    # watch never ends by itself and no end is due once only it runs (mutations: inf work counted
    # in next_end -> inf; remove not advancing the others first -> wrong work left)
    cpu = CpuShare(2)
    cpu.add(0.0, 1.0, 1.0, "load")
    cpu.add(0.0, 1.0, 1.0, "batch")
    watch = cpu.add(0.0, float("inf"), 0.5, "watch")
    assert cpu.next_end() == pytest.approx(1.25)
    cpu.remove(0.5, watch)  # 0.4 done by each finite job; they run at full speed from now
    assert cpu.next_end() == pytest.approx(0.5 + 0.6)
    assert [j.payload for j in cpu.pop_done(1.1)] == ["load", "batch"]
    cpu.add(1.1, float("inf"), 0.5, "watch")
    assert cpu.next_end() is None and cpu.pop_done(5.0) == []


def test_time_cannot_go_back_and_jobs_need_positive_caps() -> None:
    cpu = CpuShare(1)
    cpu.advance(1.0)
    with pytest.raises(ValueError):
        cpu.advance(0.5)
    with pytest.raises(ValueError):
        cpu.add(1.0, 1.0, 0.0, "x")
    with pytest.raises(ValueError):
        CpuShare(0)


# -- the simulator on a tiny CPU-only board ---------------------------------------------------
def _profile(load_cpu_s: float | None, cores: int | None, first_extra: float | None = None,
             watch: float | None = None, unload_cpu_s: float | None = None) -> CostProfile:
    cost = ArchCost(k_s=0.001, b_s=0.001, max_batch=8, load_time_s={"disk": 0.2}, weight_bytes=10_000_000,
                    load_time_idle_s=0.1, load_cpu_s=load_cpu_s, first_batch_extra_s=first_extra,
                    load_watch_cores=watch)
    return CostProfile("t", {"cpu": ProcessorSpec(concurrent_loads=2, unload_time_s=0.0, unload_cpu_s=unload_cpu_s)},
                       {"cls": {"cpu": cost}}, storage_concurrent_loads=2, host_cpu_cores=cores)


def _workload(n_experts: int, requests_per_expert: int = 1) -> Workload:
    nodes = [ExpertNode(f"e{i}", "cls", {"cpu": 10_000_000}, "preliminary") for i in range(n_experts)]
    routes = {f"t{i}": TypeRoute(1.0 / n_experts, f"e{i}") for i in range(n_experts)}
    reqs = []
    for i in range(n_experts):
        for j in range(requests_per_expert):
            rid = i * requests_per_expert + j
            reqs.append(Request(rid, 0.0, f"e{i}", None))
    return Workload("tiny", "A", nodes, routes, reqs, {r.id: False for r in reqs},
                    [f"t{r.id // requests_per_expert}" for r in reqs])


def _config(executors: int = 2) -> ServeConfig:
    return ServeConfig(executors=tuple(ExecutorConfig(f"cpu{i}", "cpu", 25_000_000) for i in range(executors)),
                       policy="samba-parallel")


def test_without_cores_in_the_profile_loads_take_their_fixed_time() -> None:
    # two loads at once through 2 channels, 0.2 s each: one round of loads (the presets' model;
    # mutation: apply the CPU model without host.cpu_cores)
    wl = _workload(2)
    r = simulate(wl, _config(), _profile(0.3, None), "samba-parallel", warmup_tasks=0)
    assert r.makespan_s == pytest.approx(0.2 + 0.002, abs=1e-6)


def test_loads_share_the_cores_when_the_profile_says_how_many() -> None:
    # same board with 2 cores and loads of 0.3 CPU s that alone take 0.1 s (cap 2 cores = the
    # host): two at once share 2 cores -> 0.3 s, then one batch each (mutations: fixed load time
    # -> 0.202 s; the cap from load_time_s.disk instead of the idle figure -> 1.5 cores, 0.3 s too
    # but alone 0.2 s, see the next assertion)
    wl = _workload(2)
    r = simulate(wl, _config(), _profile(0.3, 2), "samba-parallel", warmup_tasks=0)
    assert r.makespan_s == pytest.approx(0.3 + 0.002, abs=1e-6)
    alone = simulate(_workload(1), _config(1), _profile(0.3, 2), "samba-parallel", warmup_tasks=0)
    assert alone.makespan_s == pytest.approx(0.15 + 0.002, abs=1e-6)  # cap min(2, 0.3/0.1) = 2 cores


def test_the_process_watch_beside_each_load_takes_cores_from_the_loads() -> None:
    # loads of 0.1 CPU s alone in 0.1 s (cap 1) with a watch of 0.5 core each: alone the load
    # still takes 0.1 s (1.5 caps <= 2 cores), two at once want 3 cores of 2 -> 0.15 s (mutations:
    # watch ignored -> 0.1 s for two; watch not removed at the load's end -> the batches slow too)
    one = simulate(_workload(1), _config(1), _profile(0.1, 2, watch=0.5), "samba-parallel", warmup_tasks=0)
    assert one.makespan_s == pytest.approx(0.1 + 0.002, abs=1e-6)
    two = simulate(_workload(2), _config(), _profile(0.1, 2, watch=0.5), "samba-parallel", warmup_tasks=0)
    assert two.makespan_s == pytest.approx(0.15 + 0.002, abs=1e-6)


def test_an_unloads_cpu_work_slows_what_runs_beside_it() -> None:
    # one executor with room for one expert, two experts one after the other: the second load
    # runs beside the first expert's unload. Loads of 0.2 CPU s alone in 0.1 s (cap 2 = the host)
    # on 2 cores: with an unload of 0.5 CPU s (1 core) beside it the load gets 1 core at first
    # (caps 3 > 2: scale 2/3 -> rates 4/3 and 2/3): it takes 0.15 s instead of 0.1 s
    # (mutation: unload CPU ignored -> makespan shorter by 0.05 s)
    wl = _workload(2)
    wl.requests[1] = replace(wl.requests[1], arrival_s=0.0)
    cfg = ServeConfig(executors=(ExecutorConfig("cpu0", "cpu", 15_000_000),), policy="samba-lru")
    base = simulate(wl, cfg, _profile(0.2, 2), "samba-lru", warmup_tasks=0)
    slow = simulate(wl, cfg, _profile(0.2, 2, unload_cpu_s=0.5), "samba-lru", warmup_tasks=0)
    assert slow.makespan_s == pytest.approx(base.makespan_s + 0.05, abs=1e-6)


def test_a_batch_beside_loads_slows_down_on_shared_cores() -> None:
    # the cores also run CPU batches: with many requests per expert, batches overlap the second
    # round of loads and everything takes longer than with free overlap (mutation: batches kept
    # off the cores -> the fixed-time makespan)
    wl = _workload(4, requests_per_expert=8)
    free = simulate(wl, _config(), _profile(0.2, 100), "samba-parallel", warmup_tasks=0)
    shared = simulate(wl, _config(), _profile(0.2, 1), "samba-parallel", warmup_tasks=0)
    assert shared.makespan_s > free.makespan_s * 1.5
    assert shared.completed == free.completed == len(wl.requests)


def test_the_first_batch_after_a_load_pays_the_extra_once() -> None:
    # one expert, 16 requests at t=0 in two batches of 8: the first after the load pays 0.05 s,
    # the second does not (mutations: never charged -> makespan 0.2 + 2 * 0.009; charged on every
    # batch -> + 0.1)
    wl = _workload(1, requests_per_expert=16)
    r = simulate(wl, _config(1), _profile(None, None, first_extra=0.05), "samba-parallel", warmup_tasks=0)
    assert r.makespan_s == pytest.approx(0.2 + 2 * 0.009 + 0.05, abs=1e-6)


def test_profile_round_trip_keeps_the_new_fields_and_presets_have_none() -> None:
    p = _profile(0.3, 2, 0.02, watch=0.15, unload_cpu_s=0.04)
    text = __import__("yaml").safe_dump(profile_to_data(p))
    back = load_profile_text(text, "p.yaml")
    assert back == p and back.host_cpu_cores == 2
    cost = back.cost("cls", "cpu")
    assert cost is not None and cost.load_cpu_s == 0.3 and cost.first_batch_extra_s == 0.02
    assert cost.load_watch_cores == 0.15 and back.processor("cpu").unload_cpu_s == 0.04
    from orchestrator.simulate.presets import load_preset

    assert load_preset("paper-numa").profile.host_cpu_cores is None


def test_profile_parser_names_a_bad_host_field() -> None:
    from orchestrator.errors import ConfigError

    data = profile_to_data(replace(_profile(0.3, 2)))
    data["host"] = {"cpu_cores": 0}
    with pytest.raises(ConfigError, match=r"host\.cpu_cores"):
        load_profile_text(__import__("yaml").safe_dump(data), "p.yaml")
    data["host"] = {"cores": 2}
    with pytest.raises(ConfigError, match=r"host"):
        load_profile_text(__import__("yaml").safe_dump(data), "p.yaml")
