from __future__ import annotations

import pytest

from orchestrator.core.memory import (
    EVICTION_POLICIES,
    BudgetExceededError,
    ExpertPool,
    ExpertState,
    IllegalTransitionError,
)

from .factories import make_graph

S = ExpertState


def test_legal_lifecycle_counts_bytes_until_confirmed() -> None:
    p = ExpertPool("gpu0", 100)
    p.transition("a", S.LOADING, 40)
    assert p.used_bytes == 40 and p.state("a") is S.LOADING
    p.transition("a", S.READY)
    p.transition("a", S.UNLOADING)
    assert p.used_bytes == 40, "an unloading expert counts until the unload is confirmed"
    p.transition("a", S.UNLOADED)
    assert p.used_bytes == 0 and p.state("a") is S.UNLOADED


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], S.READY),
        ([], S.UNLOADING),
        ([S.LOADING], S.UNLOADING),
        ([S.LOADING, S.READY], S.LOADING),
        ([S.LOADING, S.READY, S.UNLOADING], S.READY),
    ],
)
def test_illegal_transitions_raise(path: list[ExpertState], bad: ExpertState) -> None:
    p = ExpertPool("gpu0", 100)
    for st in path:
        p.transition("a", st, 10)
    with pytest.raises(IllegalTransitionError):
        p.transition("a", bad, 10)


def test_failed_load_frees_memory_and_can_retry() -> None:
    p = ExpertPool("gpu0", 100)
    p.transition("a", S.LOADING, 60)
    p.transition("a", S.FAILED)
    assert p.used_bytes == 0
    p.transition("a", S.LOADING)
    p.transition("a", S.READY)
    assert p.is_ready("a")


def test_budget_is_enforced_on_load_and_on_batch_activations() -> None:
    p = ExpertPool("gpu0", 100)
    p.place("a", 70)
    with pytest.raises(BudgetExceededError):
        p.transition("b", S.LOADING, 40)
    with pytest.raises(BudgetExceededError):
        p.pin("a", 0.0, activation_bytes=31)
    p.pin("a", 0.0, activation_bytes=30)
    assert p.free_bytes == 0


def test_pinned_expert_cannot_be_unloaded_nor_chosen() -> None:
    g = make_graph()
    p = ExpertPool("gpu0", 100)
    p.place("cls_0", 50)
    p.place("cls_1", 50)
    p.pin("cls_0", 1.0)
    with pytest.raises(IllegalTransitionError):
        p.transition("cls_0", S.UNLOADING)
    for name, factory in EVICTION_POLICIES.items():
        v = factory().victims(p, g, 50)
        assert v == ["cls_1"], name
    assert EVICTION_POLICIES["lru"]().victims(p, g, 100) is None
    p.unpin("cls_0", 2.0)
    assert set(EVICTION_POLICIES["lru"]().victims(p, g, 100) or []) == {"cls_0", "cls_1"}


def test_lru_and_fifo_orders() -> None:
    g = make_graph()
    p = ExpertPool("gpu0", 300)
    for n in ("cls_0", "cls_1", "cls_2"):
        p.place(n, 100)
    p.touch("cls_0", 5.0)  # most recently used, but loaded first
    p.touch("cls_1", 1.0)
    p.touch("cls_2", 3.0)
    assert EVICTION_POLICIES["lru"]().victims(p, g, 100) == ["cls_1"]
    assert EVICTION_POLICIES["fifo"]().victims(p, g, 100) == ["cls_0"]


def test_two_stage_evicts_orphaned_subsequent_first_then_by_usage() -> None:
    g = make_graph()  # det_0 follows cls_0, cls_2, cls_4; cls_0 is the most used
    p = ExpertPool("gpu0", 1000 * 10**6)
    p.place("cls_1", 10 * 10**6)
    p.place("cls_5", 10 * 10**6)
    p.place("det_0", 20 * 10**6)
    pol = EVICTION_POLICIES["two-stage"]()
    # no preliminary of det_0 resident: stage 1 picks it although it is the most used
    assert g.usage_prob("det_0") > g.usage_prob("cls_5")
    assert pol.victims(p, g, p.free_bytes + 1) == ["det_0"]
    p.place("cls_2", 10 * 10**6)
    # now a preliminary is resident: stage 2, ascending usage (cls_5 is the rarest)
    assert pol.victims(p, g, p.free_bytes + 1) == ["cls_5"]
    assert EVICTION_POLICIES["usage"]().victims(p, g, p.free_bytes + 1) == ["cls_5"]


def test_two_stage_stage_one_evicts_the_largest_orphan_first() -> None:
    from orchestrator.core.graph import DependencyGraph, ExpertNode, TypeRoute

    mb = 10**6
    nodes = [
        ExpertNode("cls_a", "classifier", {"gpu": 10 * mb}, "preliminary"),
        ExpertNode("cls_b", "classifier", {"gpu": 10 * mb}, "preliminary"),
        ExpertNode("cls_c", "classifier", {"gpu": 10 * mb}, "preliminary"),
        ExpertNode("det_small", "detector", {"gpu": 20 * mb}, "subsequent"),
        ExpertNode("det_large", "detector", {"gpu": 30 * mb}, "subsequent"),
    ]
    routes = [
        TypeRoute(0.4, "cls_a", "det_small", 0.9),
        TypeRoute(0.4, "cls_b", "det_large", 0.9),
        TypeRoute(0.2, "cls_c"),
    ]
    g = DependencyGraph(nodes, routes)
    p = ExpertPool("gpu0", 1000 * mb)
    for name, size in (("cls_c", 10), ("det_small", 20), ("det_large", 30)):
        p.place(name, size * mb)
    pol = EVICTION_POLICIES["two-stage"]()
    # both detectors are orphans (neither preliminary resident): stage 1, largest first
    assert pol.victims(p, g, p.free_bytes + 1) == ["det_large"]
    assert pol.victims(p, g, p.free_bytes + 31 * mb) == ["det_large", "det_small"]
    p.place("cls_b", 10 * mb)  # det_large's preliminary is back: only det_small is an orphan
    assert pol.victims(p, g, p.free_bytes + 1) == ["det_small"]
