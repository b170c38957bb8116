from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from orchestrator.core.decisions import Dispatch
from orchestrator.core.scheduler import CoreScheduler, Request

from .factories import MB, InstantDriver, make_config, make_graph, make_profile


def _core(policy: str, *budgets: float, **kw: object) -> CoreScheduler:
    return CoreScheduler(make_graph(), make_config(*budgets), make_profile(**kw), policy)  # type: ignore[arg-type]


def test_fcfs_batches_only_back_to_back_requests() -> None:
    core = _core("samba-lru", 200)
    d = InstantDriver(core)
    for i, e in enumerate(["cls_1", "cls_1", "cls_3", "cls_1"]):
        d.arrive(Request(i, 0.0, e))
    d.finish_all()
    assert [(x.expert, x.request_ids) for x in d.dispatches] == [
        ("cls_1", (0,)),  # dispatched on arrival, the executor was idle
        ("cls_1", (1,)),
        ("cls_3", (2,)),
        ("cls_1", (3,)),
    ]


def test_arranging_inserts_behind_queued_requests_of_the_same_expert() -> None:
    core = _core("em-ra", 200)
    d = InstantDriver(core)
    for i, e in enumerate(["cls_5", "cls_1", "cls_3", "cls_1", "cls_3", "cls_1"]):
        d.arrive(Request(i, 0.0, e))
    d.finish_all()
    assert [(x.expert, x.request_ids) for x in d.dispatches] == [
        ("cls_5", (0,)),
        ("cls_1", (1, 3, 5)),
        ("cls_3", (2, 4)),
    ]


def test_split_respects_max_batch_and_free_memory() -> None:
    # 25 MB budget: one 10 MB expert + 1 MB activations per item -> at most 15 items fit, max batch 4
    core = _core("em-ra", 25, max_batch=4)
    d = InstantDriver(core)
    d.arrive(Request(0, 0.0, "cls_5"))
    for i in range(1, 10):
        d.arrive(Request(i, 0.0, "cls_1"))
    d.finish_all()
    sizes = [len(x.request_ids) for x in d.dispatches if x.expert == "cls_1"]
    assert sizes == [4, 4, 1]
    core = _core("em-ra", 12.5, max_batch=4)  # only 2 items of activations fit next to the expert
    d = InstantDriver(core)
    d.arrive(Request(0, 0.0, "cls_5"))
    for i in range(1, 6):
        d.arrive(Request(i, 0.0, "cls_1"))
    d.finish_all()
    assert [len(x.request_ids) for x in d.dispatches if x.expert == "cls_1"] == [2, 2, 1]


def test_makespan_assignment_prefers_the_executor_holding_the_expert() -> None:
    core = _core("coserve", 35, 35)  # two executors; 4 MB kept for a max batch's activations
    d = InstantDriver(core)
    d.place()
    placed = {x.expert: x.executor for x in d.loads}
    # by descending usage: det_0 -> gpu0, cls_0 -> gpu1, cls_1 -> gpu0, cls_2 -> gpu1, cls_3 -> gpu1 (gpu0 full)
    assert placed == {"det_0": "gpu0", "cls_0": "gpu1", "cls_1": "gpu0", "cls_2": "gpu1", "cls_3": "gpu1"}
    n_initial = len(d.loads)
    for i, e in enumerate(["cls_1", "cls_1", "cls_0", "cls_3"]):
        d.arrive(Request(i, 0.0, e))
    d.finish_all()
    runs = {x.expert: x.executor for x in d.dispatches}
    assert runs == {"cls_1": "gpu0", "cls_0": "gpu1", "cls_3": "gpu1"}
    assert len(d.loads) == n_initial, "no switch needed"


def test_subsequent_step_only_when_the_verdict_calls_for_it() -> None:
    core = _core("coserve", 100)
    d = InstantDriver(core)
    d.place()
    d.arrive(Request(0, 0.0, "cls_0", "det_0"))
    d.arrive(Request(1, 0.0, "cls_2", "det_0"))
    first = d.dispatches[0]
    assert first.stage == 0
    d.finish(first, {0: True})  # request 0: "no defect" -> the detector must check it
    d.finish_all({1: False})
    assert any(
        isinstance(x, Dispatch) and x.expert == "det_0" and x.request_ids == (0,) for x in d.dispatches
    )
    assert not any(x.expert == "det_0" and 1 in x.request_ids for x in d.dispatches)
    assert sorted(d.completed) == [0, 1] and not d.rejected


def test_too_large_expert_is_rejected_with_a_reason() -> None:
    core = _core("coserve", 5)
    d = InstantDriver(core)
    d.arrive(Request(7, 0.0, "cls_0"))
    assert 7 in d.rejected and "fits no executor" in d.rejected[7]


def test_eviction_unloads_before_loading_and_never_exceeds_budget() -> None:
    core = _core("samba-lru", 25)  # one executor, room for two 10 MB experts with activations
    assert core.cache is None  # no CPU executor, no cache bytes: no cache tier
    d = InstantDriver(core)
    for i, e in enumerate(["cls_1", "cls_2", "cls_3", "cls_1"]):
        d.arrive(Request(i, 0.0, e))
        d.finish_all()
        pool = core.pool("gpu0")
        assert pool.used_bytes <= pool.budget_bytes
    assert [u.expert for u in d.unloads] == ["cls_1", "cls_2"]
    assert sorted(d.completed) == [0, 1, 2, 3]
    assert core.pool("gpu0").peak_bytes <= 25 * MB


def test_core_is_pure() -> None:
    code = (
        "import sys, orchestrator.core, orchestrator.core.scheduler\n"
        "bad = [m for m in ('asyncio', 'grpc', 'tritonclient') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
    src = Path(__file__).resolve().parents[3] / "orchestrator" / "core"
    pattern = re.compile(r"^\s*(import|from)\s+(time|datetime|asyncio|grpc|tritonclient|socket|os)\b", re.M)
    for f in src.glob("*.py"):
        text = f.read_text()
        assert not pattern.search(text), f"{f.name} imports a clock, I/O or networking module"
        assert "open(" not in text and "perf_counter" not in text, f.name


def _guard_run(bound: float | None) -> list[str]:
    from orchestrator.core.features import Features

    cfg = make_config(200)
    if bound is not None:
        cfg = cfg.with_features(starvation_bound_s=bound)
    assert isinstance(cfg.features, Features)
    core = CoreScheduler(make_graph(), cfg, make_profile(), "em-ra")
    d = InstantDriver(core)
    d.arrive(Request(0, 0.0, "cls_0", "det_0"))  # runs at once
    d.now = 0.5
    for i, e in enumerate(["cls_1", "cls_3", "cls_5"], start=1):
        d.arrive(Request(i, 0.5, e))
    d.now = 2.0
    d.finish(d.dispatches[0], {0: True})  # request 0 needs its detector step, 2 s after arrival
    return [x.expert for x in d.dispatches[1:2]]


def test_starvation_guard_serves_an_over_age_step_next() -> None:
    assert _guard_run(None) == ["cls_1"]  # arranged order: the detector step queues at the tail
    assert _guard_run(1.0) == ["det_0"]  # older than the bound: served next
    assert _guard_run(5.0) == ["cls_1"]


def test_online_replacement_follows_the_mix_when_the_box_is_idle() -> None:
    cfg = make_config(35).with_features(online_probabilities=True)
    core = CoreScheduler(make_graph(), cfg, make_profile(), "coserve")
    d = InstantDriver(core)
    d.place()
    assert set(core.pool("gpu0").resident()) == {"det_0", "cls_0"}
    # the mix changes: type 5 now dominates
    core.graph.set_probabilities({"cls_5": 0.9, "cls_0": 0.01, "det_0": 0.01})
    d.arrive(Request(0, 0.0, "cls_0"))
    assert not [u for u in d.unloads], "no re-placement while a batch runs"
    d.finish_all()
    assert "cls_5" in core.pool("gpu0").resident()
    assert core.stats.replacement_loads == 1
    assert [u.reason for u in d.unloads] == ["replaced by a likelier expert"]


def test_no_replacement_without_online_probabilities() -> None:
    core = CoreScheduler(make_graph(), make_config(35), make_profile(), "coserve")
    d = InstantDriver(core)
    d.place()
    core.graph.set_probabilities({"cls_5": 0.9, "cls_0": 0.01, "det_0": 0.01})
    d.arrive(Request(0, 0.0, "cls_0"))
    d.finish_all()
    assert "cls_5" not in core.pool("gpu0").resident() and core.stats.replacement_loads == 0


def test_failed_load_rejects_the_waiting_requests_and_frees_memory() -> None:
    from orchestrator.core.decisions import Load, Reject
    from orchestrator.core.memory import ExpertState

    core = CoreScheduler(make_graph(), make_config(100), make_profile(), "em-ra")
    first = core.on_arrival(Request(0, 0.0, "cls_3"), 0.0)
    load = first[0]
    assert isinstance(load, Load) and load.expert == "cls_3"
    assert core.on_arrival(Request(1, 0.1, "cls_3"), 0.1) == []  # joins the group waiting for the load
    assert core.pool("gpu0").used_bytes == 10 * MB
    out = core.on_load_done("gpu0", "cls_3", 1.0, ok=False)
    rejected = [d for d in out if isinstance(d, Reject)]
    assert sorted(r.request_id for r in rejected) == [0, 1]
    assert all("failed" in r.reason for r in rejected)
    assert core.pool("gpu0").state("cls_3") is ExpertState.UNLOADED and core.pool("gpu0").used_bytes == 0
    # the expert can be loaded again for a later request
    again = core.on_arrival(Request(2, 2.0, "cls_3"), 2.0)
    assert isinstance(again[0], Load)


def test_private_scheduler_methods_use_every_parameter() -> None:
    """A parameter a helper ignores (``now`` in ``_make_room`` once) misleads every caller (every
    module of the core)."""
    import ast
    import importlib
    import inspect
    import pkgutil

    import orchestrator.core as core_pkg

    unused = []
    for info in pkgutil.iter_modules(core_pkg.__path__):
        mod = importlib.import_module(f"orchestrator.core.{info.name}")
        tree = ast.parse(inspect.getsource(mod))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.FunctionDef)
                and node.name.startswith("_")
                and not node.name.startswith("__")
            ):
                used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                unused += [
                    f"{info.name}.{node.name}({a.arg})" for a in node.args.args[1:] if a.arg not in used
                ]
    assert unused == []


class _Loads:
    """A hand-made ``ExecutorLoad`` view: fixed backlogs and added latencies per executor."""

    def __init__(self, backlog: list[float], added: list[float]) -> None:
        self.backlog, self.added = backlog, added

    @property
    def n_executors(self) -> int:
        return len(self.backlog)

    def predicted_backlog_s(self, q: int, now: float) -> float:
        return self.backlog[q]

    def added_latency_s(self, q: int, expert: str) -> float:
        return self.added[q]


def test_makespan_assignment_minimises_the_maximum_over_all_queues_then_the_added_latency() -> None:
    from orchestrator.core.assign import MakespanAssign

    pick = MakespanAssign().choose
    # q2 dominates the makespan whatever happens; joining q1 (which holds the expert: +K) or
    # opening a group on the empty q0 (+K+B+load) leaves it at 10 s: the tie goes to the smaller
    # added latency, q1, although q0's own backlog would stay the smaller
    view = _Loads([0.0, 3.0, 10.0], [1.02, 0.01, 1.02])
    assert pick(view, "x", [0, 1], 0.0) == 1
    # the same with the resident queue first: ties to the added latency, not to the index
    assert pick(_Loads([3.0, 0.0, 10.0], [0.01, 1.02, 1.02]), "x", [0, 1], 0.0) == 0
    # when the step itself sets the makespan, the smaller resulting maximum wins
    assert pick(_Loads([0.0, 3.0], [1.02, 0.01]), "x", [0, 1], 0.0) == 0
    # a full tie (same maximum, same added latency) goes to the lowest index
    assert pick(_Loads([0.0, 0.0, 10.0], [1.0, 1.0, 1.0]), "x", [0, 1], 0.0) == 0


def test_samba_loads_the_next_distinct_experts_while_the_head_loads_and_serves_strictly_fcfs() -> None:
    from orchestrator.core.decisions import Load

    core = _core("samba-lru", 100)  # one executor; two loads at a time (profile concurrent_loads)
    out = core.on_arrival(Request(0, 0.0, "cls_1"), 0.0)
    assert [(d.expert, d.tier) for d in out if isinstance(d, Load)] == [("cls_1", "disk")]
    out = core.on_arrival(Request(1, 0.0, "cls_2"), 0.0)
    assert [d.expert for d in out if isinstance(d, Load)] == ["cls_2"]  # loads while cls_1 loads
    out = core.on_arrival(Request(2, 0.0, "cls_3"), 0.0)
    assert not [d for d in out if isinstance(d, Load)]  # both load slots of the box are busy
    # cls_2 finishes first, but cls_1's request is served first; the freed slot loads cls_3
    out = core.on_load_done("gpu0", "cls_2", 0.5)
    assert not [d for d in out if isinstance(d, Dispatch)]
    assert [d.expert for d in out if isinstance(d, Load)] == ["cls_3"]
    out = core.on_load_done("gpu0", "cls_1", 1.0)
    assert [(d.expert, d.request_ids) for d in out if isinstance(d, Dispatch)] == [("cls_1", (0,))]


def test_single_executor_samba_gets_the_contexts_of_the_processes_it_does_not_run() -> None:
    from dataclasses import replace

    from orchestrator.core.layout import executors_for
    from orchestrator.core.policies import get_policy

    cfg = replace(make_config(100, 100, 100, cpu_mb=300), gpu_context_bytes=5 * MB)
    (single,), cache = executors_for(get_policy("samba-lru"), cfg)
    assert single.budget_bytes == 300 * MB + 2 * 5 * MB and cache == 300 * MB
    parallel, _ = executors_for(get_policy("samba-parallel"), cfg)
    assert [e.budget_bytes for e in parallel] == [75 * MB] * 4
    assert executors_for(get_policy("coserve"), cfg)[0] == cfg.executors


def test_host_memory_holds_a_disk_load_only_once_it_is_done() -> None:
    from orchestrator.core.decisions import Load

    cfg = make_config(100, 100, cpu_mb=300)  # samba-parallel: three GPU executors, a cache tier
    core = CoreScheduler(make_graph(), cfg, make_profile(), "samba-parallel")
    first = [d for d in core.on_arrival(Request(0, 0.0, "cls_1"), 0.0) if isinstance(d, Load)]
    assert [(d.executor, d.tier) for d in first] == [("gpu0", "disk")]
    # the read is not done: another executor must read the disk too, not copy from host memory
    second = [d for d in core.on_arrival(Request(1, 0.0, "cls_1"), 0.0) if isinstance(d, Load)]
    assert [(d.executor, d.tier) for d in second] == [("gpu1", "disk")]
    core.on_load_done("gpu0", "cls_1", 1.0)
    third = [d for d in core.on_arrival(Request(2, 1.0, "cls_1"), 1.0) if isinstance(d, Load)]
    assert [(d.executor, d.tier) for d in third] == [("gpu2", "cpu")]


def test_samba_never_evicts_for_a_load_ahead_an_expert_a_request_ahead_of_it_needs() -> None:
    from orchestrator.core.decisions import Load, Unload

    core = _core("samba-lru", 35)  # three 10 MB experts + a max batch (4 x 1 MB) of activations
    for rid, (t, e) in enumerate([(0.0, "cls_1"), (1.0, "cls_2")]):
        core.on_arrival(Request(rid, t, e), t)
        (batch,) = [d for d in core.on_load_done("gpu0", e, t + 0.1) if isinstance(d, Dispatch)]
        core.on_batch_done(batch.batch_id, t + 0.2, {})
    # cls_1 (used at 0.2) is older than cls_2 (1.2); cls_3 loads for the head, cls_1 queues behind
    assert [d.expert for d in core.on_arrival(Request(2, 2.0, "cls_3"), 2.0) if isinstance(d, Load)] == [
        "cls_3"
    ]
    assert core.on_arrival(Request(3, 2.0, "cls_1"), 2.0) == []
    out = core.on_arrival(Request(4, 2.0, "cls_4"), 2.0)
    # loading cls_4 ahead needs a victim: LRU would pick cls_1, but request 3 ahead needs it
    assert [(d.expert, d.reason) for d in out if isinstance(d, Unload)] == [
        ("cls_2", "evicted to load ahead")
    ]


def _deadline_run(deadline_s: float | None) -> list[str]:
    """cls_0 runs; cls_1, cls_3 (no deadline) and cls_5 queue behind it, every expert still to
    load (1 s predicted); cls_5's request may carry a deadline. The order of the next loads."""
    core = CoreScheduler(make_graph(), make_config(200), make_profile(), "em-ra")
    d = InstantDriver(core)
    d.arrive(Request(0, 0.0, "cls_0"))
    for i, e in enumerate(["cls_1", "cls_3"], start=1):
        d.arrive(Request(i, 0.0, e))
    d.arrive(Request(3, 0.0, "cls_5", deadline_s=deadline_s))
    d.now = 0.1
    d.finish(d.dispatches[0])
    return [x.expert for x in d.dispatches[1:]] + [x.expert for x in d.loads[1:2]]


def test_deadline_order_serves_a_step_about_to_miss_its_deadline_first() -> None:
    # serving cls_1 first (1.02 s) then cls_5 (1.02 s) ends at 2.14 s > 1.5: cls_5 goes first
    # (mutation: no deadline pick -> cls_1 first)
    assert _deadline_run(1.5)[0] == "cls_5"
    assert _deadline_run(None)[0] == "cls_1"  # no deadline: the queue's own order
    assert _deadline_run(10.0)[0] == "cls_1"  # a comfortable deadline does not reorder
    # a deadline it cannot meet even if served now (0.1 + 1.02 > 0.5) does not reorder either
    # (mutation: pick whenever the head would make it miss -> cls_5 first, for nothing)
    assert _deadline_run(0.5)[0] == "cls_1"


def test_withdrawn_requests_leave_no_queued_work_and_load_nothing() -> None:
    from orchestrator.core.decisions import Load

    core = CoreScheduler(make_graph(), make_config(200), make_profile(), "em-ra")
    d = InstantDriver(core)
    d.arrive(Request(0, 0.0, "cls_0"))
    d.arrive(Request(1, 0.0, "cls_1"))
    d.arrive(Request(2, 0.0, "cls_1"))
    d.arrive(Request(3, 0.0, "cls_3"))
    assert core.queued_steps() == 3
    assert core.withdraw(1, 0.05) == [] and core.withdraw(2, 0.05) == []  # cls_1's group is gone
    assert core.queued_steps() == 1 and core.stats.withdrawn == 2
    assert core.withdraw(2, 0.05) == [] and core.withdraw(99, 0.05) == []  # unknown / twice: ignored
    d.now = 0.1
    d.finish_all()
    assert [x.expert for x in d.dispatches] == ["cls_0", "cls_3"]  # cls_1 never loaded nor run
    assert "cls_1" not in [x.expert for x in d.loads if isinstance(x, Load)]
    assert sorted(d.completed) == [0, 3] and core.queued_steps() == 0


def test_a_request_withdrawn_while_its_batch_runs_gets_no_subsequent_step() -> None:
    core = CoreScheduler(make_graph(), make_config(200), make_profile(), "em-ra")
    d = InstantDriver(core)
    d.arrive(Request(0, 0.0, "cls_0", "det_0"))
    d.arrive(Request(1, 0.0, "cls_0", "det_0"))
    assert [x.request_ids for x in d.dispatches] == [(0,)]
    assert core.withdraw(0, 0.01) == []  # its batch runs on: nothing to take back from a queue
    d.now = 0.1
    d.finish(d.dispatches[0], {0: True})  # the classifier calls for the detector: not for request 0
    d.finish_all({1: False})
    assert [x.request_ids for x in d.dispatches] == [(0,), (1,)]
    assert d.completed == [1] and core.queued_steps() == 0
