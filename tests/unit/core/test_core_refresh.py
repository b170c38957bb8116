"""``CoreScheduler.refresh``: a new version on disk replaces a held copy, never two at once."""

from __future__ import annotations

from orchestrator.core.decisions import Dispatch, Load, Reject, Unload
from orchestrator.core.memory import ExpertState
from orchestrator.core.scheduler import CoreScheduler, Request

from .factories import MB, make_config, make_graph, make_profile


def test_refresh_unloads_an_idle_copy_waits_for_a_running_batch_and_ignores_the_rest() -> None:
    core = CoreScheduler(make_graph(), make_config(100), make_profile(), "em-ra")
    assert core.refresh("gpu0", "cls_3", 0.0) == []  # not held: nothing to replace
    [load] = core.on_arrival(Request(0, 0.0, "cls_3"), 0.0)
    assert isinstance(load, Load)
    assert core.refresh("gpu0", "cls_3", 0.1) == []  # loading: the driver asks again after the load
    [batch] = core.on_load_done("gpu0", "cls_3", 1.0)
    assert isinstance(batch, Dispatch)
    # a batch runs on it: the unload waits for that batch (kills: unload at once / never)
    assert core.refresh("gpu0", "cls_3", 1.01) == []
    assert core.pool("gpu0").state("cls_3") is ExpertState.READY
    out = core.on_batch_done(batch.batch_id, 1.1, {0: False})
    unloads = [d for d in out if isinstance(d, Unload)]
    assert [(u.expert, u.reason) for u in unloads] == [("cls_3", "a new version is on disk")]
    # its bytes stay counted until the unload is confirmed: no second copy fits beside it
    assert core.pool("gpu0").state("cls_3") is ExpertState.UNLOADING
    assert core.pool("gpu0").used_bytes == 10 * MB
    # a request for it now waits, and its load follows the confirmation (the new version)
    assert not [d for d in core.on_arrival(Request(1, 1.2, "cls_3"), 1.2) if isinstance(d, Load)]
    after = core.on_unload_done("gpu0", "cls_3", 1.3)
    assert [d.expert for d in after if isinstance(d, Load)] == ["cls_3"]
    # an idle ready copy goes at once
    [batch2] = core.on_load_done("gpu0", "cls_3", 2.0)
    assert isinstance(batch2, Dispatch)
    assert core.on_batch_done(batch2.batch_id, 2.1, {1: False})[-1:] and core.pool("gpu0").is_ready("cls_3")
    [unload] = core.refresh("gpu0", "cls_3", 3.0)
    assert isinstance(unload, Unload) and unload.expert == "cls_3"


def test_a_measured_excess_is_counted_against_the_budget_and_evicts_until_it_fits() -> None:
    core = CoreScheduler(make_graph(), make_config(35), make_profile(), "em-ra")  # room for 3 x 10 MB
    for i, e in enumerate(["cls_1", "cls_2", "cls_3"]):
        [load] = core.on_arrival(Request(i, float(i), e), float(i))
        [batch] = core.on_load_done("gpu0", e, float(i) + 0.5)
        assert isinstance(batch, Dispatch)
        core.on_batch_done(batch.batch_id, float(i) + 0.6, {i: False})
    pool = core.pool("gpu0")
    assert pool.used_bytes == 30 * MB
    # 3 MB more than the figures say: counted, still within the budget: nothing evicted
    assert core.correct_footprint("gpu0", 3 * MB, 4.0) == []
    assert pool.used_bytes == 33 * MB and pool.free_bytes == 2 * MB
    # 8 MB more: over the budget by 3 MB: one expert goes, by the policy's ranking (kills: ignore it)
    out = core.correct_footprint("gpu0", 8 * MB, 5.0)
    assert len(out) == 1 and isinstance(out[0], Unload)
    assert core.stats.footprint_evictions == 1
    # a later measurement below the figures clears the correction (kills: a correction that only grows)
    core.on_unload_done("gpu0", out[0].expert, 5.5)
    assert core.correct_footprint("gpu0", -1 * MB, 6.0) == []
    assert pool.unattributed_bytes == 0 and pool.used_bytes == 20 * MB
    # while corrected, a load that fits the figures but not the measured footprint waits
    core.correct_footprint("gpu0", 10 * MB, 7.0)
    out = core.on_arrival(Request(9, 7.0, "cls_4"), 7.0)
    assert not [d for d in out if isinstance(d, Load)]


def test_a_request_that_fits_once_the_measured_excess_is_read_again_waits_for_that_reading() -> None:
    """The measured excess is a reading, not an expert: taken with three experts held, it stays
    counted after their evictions until the driver measures again. A request arriving in between
    must wait (LATER), not be rejected as never fitting, and the next reading lets it load
    (mutations killed: NEVER while an excess is counted -> an error verdict, as the integration
    test test_an_understated_profile_is_corrected_by_measurement once saw on a loaded box; no
    pump after a reading that frees memory -> the request waits for an unrelated event)."""
    core = CoreScheduler(make_graph(), make_config(35), make_profile(), "em-ra")  # room for 3 x 10 MB
    for i, e in enumerate(["cls_1", "cls_2", "cls_3"]):
        core.on_arrival(Request(i, float(i), e), float(i))
        [batch] = core.on_load_done("gpu0", e, float(i) + 0.5)
        assert isinstance(batch, Dispatch)
        core.on_batch_done(batch.batch_id, float(i) + 0.6, {i: False})
    # the experts really hold twice their figures: 30 MB more than accounted, all three go
    out = core.correct_footprint("gpu0", 30 * MB, 4.0)
    assert sorted(d.expert for d in out if isinstance(d, Unload)) == ["cls_1", "cls_2", "cls_3"]
    for d in out:
        core.on_unload_done("gpu0", d.expert, 4.5)
    pool = core.pool("gpu0")
    assert pool.used_bytes == 30 * MB  # the reading of 4.0 still counted: 5 MB free, no victim
    out = core.on_arrival(Request(9, 5.0, "cls_4"), 5.0)
    assert not [d for d in out if isinstance(d, Reject)]  # not rejected
    assert not [d for d in out if isinstance(d, Load)]  # and not loaded over the reading either
    # the next reading, with the experts gone, finds no excess: the waiting request loads
    after = core.correct_footprint("gpu0", 0, 5.2)
    assert [d.expert for d in after if isinstance(d, Load)] == ["cls_4"]


def test_a_waiting_step_is_rejected_when_the_next_reading_finds_the_excess_stayed() -> None:
    """The step that waited on a stale excess is answered once the next reading shows the memory
    did not come back: rejected, not left waiting for an unrelated event (mutation killed: serve
    the queue only after a reading that gives memory back -> the request is never answered)."""
    core = CoreScheduler(make_graph(), make_config(35), make_profile(), "em-ra")
    for i, e in enumerate(["cls_1", "cls_2", "cls_3"]):
        core.on_arrival(Request(i, float(i), e), float(i))
        [batch] = core.on_load_done("gpu0", e, float(i) + 0.5)
        assert isinstance(batch, Dispatch)
        core.on_batch_done(batch.batch_id, float(i) + 0.6, {i: False})
    for d in core.correct_footprint("gpu0", 30 * MB, 4.0):
        core.on_unload_done("gpu0", d.expert, 4.5)
    assert not [d for d in core.on_arrival(Request(9, 5.0, "cls_4"), 5.0) if isinstance(d, Reject)]
    after = core.correct_footprint("gpu0", 30 * MB, 5.2)  # nothing held, the same 30 MB: it stays
    assert [d.request_id for d in after if isinstance(d, Reject)] == [9]


def test_an_excess_read_with_nothing_more_held_is_memory_that_stays() -> None:
    """An excess read while the pool held no more than it does now (a server grown beyond its
    profile) does not shrink by waiting: a step that cannot fit beside it is rejected, not left
    waiting for a reading that changes nothing (mutation killed: LATER whenever any excess is
    counted -> the request is never answered)."""
    core = CoreScheduler(make_graph(), make_config(35), make_profile(), "em-ra")
    assert core.correct_footprint("gpu0", 30 * MB, 1.0) == []  # nothing held: 5 MB left
    out = core.on_arrival(Request(0, 2.0, "cls_1"), 2.0)
    assert [d.request_id for d in out if isinstance(d, Reject)] == [0]
