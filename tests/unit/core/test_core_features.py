"""The section-2 features of issue 7 and coserve+: each test fails on the mutation named in
tests/MUTATIONS.md."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core.decisions import Dispatch, Load, Unload
from orchestrator.core.memory import EVICTION_POLICIES, ExpertPool
from orchestrator.core.profile import parse_profile
from orchestrator.core.scheduler import CoreScheduler, Request

from .factories import MB, make_config, make_graph, make_profile


def _loads(out: list[Any]) -> list[str]:
    return [d.expert for d in out if isinstance(d, Load)]


def _unloads(out: list[Any]) -> list[str]:
    return [d.expert for d in out if isinstance(d, Unload)]


def test_queue_aware_victims_spare_what_the_queue_needs_then_evict_the_one_needed_last() -> None:
    g = make_graph()
    p = ExpertPool("gpu0", 40 * MB)
    for name in ("cls_0", "cls_1", "cls_2", "cls_5"):
        p.place(name, 10 * MB)
    pol = EVICTION_POLICIES["two-stage"]()
    assert pol.victims(p, g, 10 * MB) == ["cls_5"]  # the paper: the least likely
    needed = {"cls_5": 0.0, "cls_2": 3.0, "cls_1": 1.0}
    assert pol.victims(p, g, 10 * MB, needed=needed) == ["cls_0"]  # the only one nobody queued
    assert pol.victims(p, g, 20 * MB, needed=needed) == ["cls_0", "cls_2"]  # then Belady: cls_2 last


def test_queue_aware_eviction_keeps_a_queued_expert_in_the_core() -> None:
    def victim(**features: bool) -> list[str]:
        cfg = make_config(35).with_features(**features)  # three 10 MB experts + a 4 MB batch
        core = CoreScheduler(make_graph(), cfg, make_profile(), "em-ra")
        for rid, e in enumerate(["cls_3", "cls_5"]):
            core.on_arrival(Request(rid, 0.0, e), 0.0)
            (b,) = [d for d in core.on_load_done("gpu0", e, 0.1) if isinstance(d, Dispatch)]
            core.on_batch_done(b.batch_id, 0.2, {})
        core.on_arrival(Request(2, 1.0, "cls_4"), 1.0)
        (running,) = [d for d in core.on_load_done("gpu0", "cls_4", 1.1) if isinstance(d, Dispatch)]
        core.on_arrival(Request(3, 1.2, "cls_0"), 1.2)  # queued: needs a load, a victim
        core.on_arrival(Request(4, 1.2, "cls_5"), 1.2)  # queued behind it: cls_5 is needed
        return _unloads(core.on_batch_done(running.batch_id, 1.3, {}))

    # the paper ranks by probability: cls_5 is the least likely; queue-aware spares the queued one
    assert victim() == ["cls_5"]
    assert victim(queue_aware_eviction=True) == ["cls_4"]  # not queued; the paper's order among them


def test_lookahead_loads_the_next_group_while_the_head_loads_on_a_single_executor() -> None:
    cfg = make_config(100).with_features(lookahead_loading=True)
    core = CoreScheduler(make_graph(), cfg, make_profile(), "coserve")
    assert _loads(core.on_arrival(Request(0, 0.0, "cls_1"), 0.0)) == ["cls_1"]
    assert _loads(core.on_arrival(Request(1, 0.0, "cls_2"), 0.0)) == ["cls_2"]  # ahead, a slot free
    assert _loads(core.on_arrival(Request(2, 0.0, "cls_3"), 0.0)) == []  # both slots busy
    plain = CoreScheduler(make_graph(), make_config(100), make_profile(), "coserve")
    plain.on_arrival(Request(0, 0.0, "cls_1"), 0.0)
    assert _loads(plain.on_arrival(Request(1, 0.0, "cls_2"), 0.0)) == []  # the paper: head only


def test_lookahead_stays_off_where_executors_outnumber_the_disk_slots() -> None:
    # three executors, two disk slots; only gpu0 can hold an expert (the others are too small)
    cfg = make_config(100, 5, 5).with_features(lookahead_loading=True)
    core = CoreScheduler(make_graph(), cfg, make_profile(), "coserve")
    assert _loads(core.on_arrival(Request(0, 0.0, "cls_1"), 0.0)) == ["cls_1"]
    assert _loads(core.on_arrival(Request(1, 0.0, "cls_2"), 0.0)) == []  # a slot is free, yet none


def test_lookahead_never_evicts_an_expert_a_queued_step_needs() -> None:
    core = CoreScheduler(
        make_graph(), make_config(55).with_features(lookahead_loading=True), make_profile(), "coserve"
    )
    for rid, e in enumerate(["cls_3", "cls_5", "cls_4"]):  # resident, used (cls_5 the least likely)
        core.on_arrival(Request(rid, 0.0, e), 0.0)
        (b,) = [d for d in core.on_load_done("gpu0", e, 0.1) if isinstance(d, Dispatch)]
        core.on_batch_done(b.batch_id, 0.2, {})
    assert _loads(core.on_arrival(Request(10, 1.0, "cls_1"), 1.0)) == ["cls_1"]  # the head
    assert _loads(core.on_arrival(Request(11, 1.0, "cls_0"), 1.0)) == ["cls_0"]  # ahead
    core.on_arrival(Request(12, 1.0, "cls_2"), 1.0)  # both slots busy
    core.on_arrival(Request(13, 1.0, "cls_5"), 1.0)  # queued behind cls_2: cls_5 is needed
    out = core.on_load_done("gpu0", "cls_0", 1.5)  # a slot is free: cls_2 ahead needs a victim
    assert _unloads(out) == ["cls_4"]  # not cls_5, the least likely, which a queued step needs


def test_serve_resident_runs_a_ready_group_while_the_head_loads_but_never_for_fcfs() -> None:
    def dispatched(policy: str, **features: bool) -> list[str]:
        core = CoreScheduler(make_graph(), make_config(100).with_features(**features), make_profile(), policy)
        core.on_arrival(Request(0, 0.0, "cls_1"), 0.0)
        (b,) = [d for d in core.on_load_done("gpu0", "cls_1", 0.5) if isinstance(d, Dispatch)]
        core.on_batch_done(b.batch_id, 0.6, {})
        core.on_arrival(Request(1, 1.0, "cls_2"), 1.0)  # needs a load: the head waits for it
        out = core.on_arrival(Request(2, 1.0, "cls_1"), 1.0)  # cls_1 is ready
        return [d.expert for d in out if isinstance(d, Dispatch)]

    assert dispatched("em-ra") == []
    assert dispatched("em-ra", serve_resident=True) == ["cls_1"]
    assert dispatched("samba-lru", serve_resident=True) == []  # strict FCFS stays strict
    # one executor, two disk slots: loads ahead run, and serving ready groups gives way to them
    assert dispatched("em-ra", serve_resident=True, lookahead_loading=True) == []


SLOW = {
    "k_s": 0.01,
    "b_s": 0.01,
    "max_batch": 4,
    "load_time_s": {"disk": 0.2},
    "activation_bytes_per_item": MB,
}


def _slow_profile(unload_s: float) -> Any:
    return parse_profile(
        {
            "processors": {"gpu": {"concurrent_loads": 2, "unload_time_s": unload_s}},
            "architectures": {"classifier": {"gpu": SLOW}, "detector": {"gpu": SLOW}},
        },
        "slow",
    )


class _SlowUnloads:
    """Confirms loads at once and keeps unloads in flight (they take ~1 s); records decisions."""

    def __init__(self, core: CoreScheduler) -> None:
        self.core, self.unloads, self.batches = core, [], []  # type: ignore[var-annotated]

    def run(self, ds: list[Any]) -> list[Any]:
        seen = list(ds)
        for d in ds:
            if isinstance(d, Load):
                seen += self.run(self.core.on_load_done(d.executor, d.expert, 0.0))
            elif isinstance(d, Unload):
                self.unloads.append(d)
            elif isinstance(d, Dispatch):
                self.batches.append(d)
        return seen

    def arrive(self, rid: int, expert: str) -> list[Any]:
        return self.run(self.core.on_arrival(Request(rid, 0.0, expert), 0.0))

    def finish(self) -> list[Any]:
        return self.run(self.core.on_batch_done(self.batches.pop(0).batch_id, 0.0, {}))


def _slow_run(unload_s: float, **features: bool) -> tuple[list[str], list[str], list[str]]:
    """Three experts fill the pool; cls_0 and cls_1 queue while cls_5 runs; then cls_5 ends.
    Returns the unload reasons issued before cls_5 ends, when it ends, and after one more event."""
    core = CoreScheduler(
        make_graph(), make_config(35).with_features(**features), _slow_profile(unload_s), "em-ra"
    )
    d = _SlowUnloads(core)
    d.arrive(0, "cls_3")  # runs at once
    d.arrive(1, "cls_4")
    d.arrive(2, "cls_5")
    d.finish()  # cls_4 loads and runs
    d.finish()  # cls_5 loads and runs: the pool holds three experts
    d.arrive(20, "cls_0")
    d.arrive(21, "cls_1")
    before = [u.reason for u in d.unloads]
    at_end = [x.reason for x in d.finish() if isinstance(x, Unload)]
    later = [x.reason for x in d.arrive(22, "cls_2") if isinstance(x, Unload)]
    return before, at_end, later


def test_headroom_evicts_ahead_only_where_unloads_are_slow_and_waits_for_memory_coming_back() -> None:
    # fast unloads: the gate keeps the feature off (the paper's behaviour)
    assert "evicted ahead (slow unloads)" not in sum(_slow_run(0.005, unload_headroom=True), [])
    # the paper's core with slow unloads: cls_0 evicts, and the next event, while that unload is
    # still in flight, evicts again
    before, at_end, later = _slow_run(1.1)
    assert before == [] and at_end == ["evicted"] and later == ["evicted"]
    # headroom: an expert was evicted ahead while cls_5 ran; then nothing more is evicted while
    # that memory is on its way back
    before, at_end, later = _slow_run(1.1, unload_headroom=True)
    # (the headroom is the largest expert, the 20 MB detector, plus a batch: two 10 MB victims)
    assert before == ["evicted ahead (slow unloads)"] * 2 and at_end == [] and later == []


def test_headroom_counts_memory_coming_back_even_where_unloads_are_fast() -> None:
    """A 5 ms unload is still in flight at the next event (the bench board's 29 ms fast release
    spans seven 4 ms arrivals): the paper's core evicts again at it; with the feature the memory
    on its way back covers the waiting load, though the gate keeps the headroom itself off
    (kills: counting returning memory only where the headroom acts)."""
    before, at_end, later = _slow_run(0.005)
    assert at_end == ["evicted"] and later == ["evicted"]
    before, at_end, later = _slow_run(0.005, unload_headroom=True)
    assert before == [] and at_end == ["evicted"] and later == []


def test_coserve_plus_is_coserve_with_its_features() -> None:
    from orchestrator.core.policies import COSERVE_PLUS_FEATURES, get_policy

    plus = CoreScheduler(make_graph(), make_config(50), make_profile(), "coserve+")
    assert get_policy("coserve+").features == COSERVE_PLUS_FEATURES
    for name in COSERVE_PLUS_FEATURES:
        assert getattr(plus.features, name) is True
    plain = CoreScheduler(make_graph(), make_config(50), make_profile(), "coserve")
    assert not any(getattr(plain.features, name) for name in COSERVE_PLUS_FEATURES)


def test_duplicate_first_victims_go_before_the_experts_only_this_pool_holds() -> None:
    g = make_graph()
    p = ExpertPool("gpu0", 40 * MB)
    for name in ("cls_0", "cls_1", "cls_2", "cls_5"):
        p.place(name, 10 * MB)
    pol = EVICTION_POLICIES["two-stage"]()
    assert pol.victims(p, g, 10 * MB) == ["cls_5"]  # the paper: the least likely
    assert pol.victims(p, g, 10 * MB, elsewhere={"cls_1"}) == ["cls_1"]  # the box keeps cls_1
    # among duplicates the paper's order: cls_1 is less likely than cls_0
    assert pol.victims(p, g, 20 * MB, elsewhere={"cls_0", "cls_1"}) == ["cls_1", "cls_0"]
    # a duplicate a queued step needs still goes after every expert no queued step needs
    assert pol.victims(p, g, 10 * MB, needed={"cls_1": 0.0}, elsewhere={"cls_1"}) == ["cls_5"]


def test_dedup_eviction_in_the_core_evicts_what_another_executor_holds_ready() -> None:
    def victims(**features: bool) -> list[str] | None:
        cfg = make_config(40, 40).with_features(**features)
        core = CoreScheduler(make_graph(), cfg, make_profile(), "coserve")
        for name in ("cls_0", "cls_1", "cls_2", "cls_5"):
            core.experts.pools[0].place(name, 10 * MB)
        core.experts.pools[1].place("cls_1", 10 * MB)  # a duplicate on gpu1
        core.experts.pools[1].place("cls_3", 10 * MB)
        return core.experts.victims(0, 10 * MB, ())

    assert victims() == ["cls_5"]
    assert victims(dedup_eviction=True) == ["cls_1"]


def test_disk_aware_assignment_charges_a_disk_load_the_wait_for_a_storage_slot() -> None:
    def cls_1_goes_to(**features: bool) -> tuple[str, float]:
        cfg = make_config(100, 100).with_features(**features)
        core = CoreScheduler(make_graph(), cfg, make_profile(), "coserve")
        core.experts.pools[0].place("cls_1", 10 * MB)  # gpu0 holds cls_1 ready
        core.on_arrival(Request(0, 0.0, "cls_2"), 0.0)  # a disk load on gpu0 (tie: lower index)
        core.on_arrival(Request(1, 0.0, "cls_3"), 0.0)  # a disk load on gpu1: both slots busy
        rid = 2
        while core.predicted_backlog_s(0, 0.0) < 2.03:  # gpu0 gathers cls_2's steps
            core.on_arrival(Request(rid, 0.0, "cls_2"), 0.0)
            rid += 1
        assert core.queued_steps_on("gpu1") == 1
        core.on_arrival(Request(rid, 0.0, "cls_1"), 0.0)
        went = "gpu1" if core.queued_steps_on("gpu1") == 2 else "gpu0"
        return went, core.added_latency_s(1, "cls_5") - 1.02  # beyond K + B + the load

    # the paper: a switch costs its load time only, so the idle gpu1 reads cls_1 from disk again
    assert cls_1_goes_to() == ("gpu1", pytest.approx(0.0))
    # a third disk load waits for a slot (half a load on two slots): cls_1 joins its holder
    assert cls_1_goes_to(disk_aware_assign=True) == ("gpu0", pytest.approx(0.5))


def test_batch_room_evicts_only_what_no_queued_step_needs_so_the_next_batch_is_full() -> None:
    def run(**features: bool) -> tuple[list[int], list[str]]:
        cfg = make_config(31).with_features(**features)  # three 10 MB experts leave 1 item of room
        core = CoreScheduler(make_graph(), cfg, make_profile(max_batch=4), "coserve")
        for name in ("cls_0", "cls_1", "cls_2"):
            core.experts.pools[0].place(name, 10 * MB)
        sizes: list[int] = []
        unloads: list[str] = []

        def take(out: list[Any]) -> list[Dispatch]:
            unloads.extend(_unloads(out))
            ds = [d for d in out if isinstance(d, Dispatch)]
            sizes.extend(len(d.request_ids) for d in ds)
            return ds

        (running,) = take(core.on_arrival(Request(0, 0.0, "cls_0"), 0.0))
        for rid in range(1, 5):
            take(core.on_arrival(Request(rid, 0.0, "cls_0"), 0.0))
        take(core.on_arrival(Request(5, 0.0, "cls_2"), 0.0))  # queued: cls_2 is needed
        t = 0.1
        while core.running_batches():
            out = core.on_batch_done(running.batch_id, t, {})
            for v in _unloads(out):
                out += core.on_unload_done("gpu0", v, t)
            ds = take(out)
            if ds:
                running = ds[0]
            t += 0.1
        return sizes, unloads

    assert run() == ([1, 1, 1, 1, 1, 1], [])  # the paper: the batch that fits free memory
    # cls_1 (nobody queued it) makes room, not the less likely cls_2 a queued step needs: cls_0's
    # last three steps run as one batch
    assert run(batch_room=True) == ([1, 1, 3, 1], ["cls_1"])


def test_queue_counts_its_steps_with_a_deadline_through_add_take_discard_and_remove() -> None:
    from orchestrator.core.costs import cost_table
    from orchestrator.core.executor_queue import ExecutorQueue, Step

    q = ExecutorQueue(cost_table(make_graph(), make_profile(), "gpu"), arrange=True)
    for rid, (e, dl) in enumerate([("cls_0", 5.0), ("cls_0", float("inf")), ("cls_1", 6.0), ("cls_2", 7.0)]):
        q.add(Step(rid, e, 0, 0.0, 0.0, dl), 0.0)
    assert q.deadline_steps == 3
    q.take(q.groups[0], 2)  # cls_0: one with a deadline, one without
    assert q.deadline_steps == 2
    assert q.discard(2) and q.deadline_steps == 1  # cls_1's step
    q.remove(q.groups[0])  # cls_2's group, its step still in it (a rejected group)
    assert q.deadline_steps == 0 and not q.groups
