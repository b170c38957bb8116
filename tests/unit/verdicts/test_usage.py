"""Learned usage probabilities across a restart: the core's pure snapshot/restore, and
``UsageKeeper`` through a real store, so that a warm start places what the last run learned."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestrator.core.decisions import Load
from orchestrator.core.scheduler import CoreScheduler
from orchestrator.verdicts.store import VerdictStore
from orchestrator.verdicts.usage import UsageKeeper
from tests.unit.core.factories import make_config, make_graph, make_profile


def learning_core() -> CoreScheduler:
    cfg = make_config(35).with_features(online_probabilities=True)
    return CoreScheduler(make_graph(), cfg, make_profile(), "coserve")


def observe(core: CoreScheduler, expert: str, n: int) -> None:
    for _ in range(n):
        core.graph.observe_request()
        core.graph.observe_use(expert)


def placed(core: CoreScheduler) -> set[str]:
    return {d.expert for d in core.initial_placement(0.0) if isinstance(d, Load)}


def test_a_snapshot_restores_the_same_probabilities() -> None:
    run = learning_core()
    observe(run, "cls_5", 300)
    observe(run, "cls_2", 100)
    snapshot = run.graph.usage_snapshot()
    warm = learning_core()
    warm.graph.restore_usage(snapshot)
    for e in run.graph.experts:
        assert warm.graph.usage_prob(e) == pytest.approx(run.graph.usage_prob(e), rel=1e-9)
    # learning continues from there the same way
    observe(run, "cls_1", 50)
    observe(warm, "cls_1", 50)
    assert warm.graph.usage_prob("cls_1") == pytest.approx(run.graph.usage_prob("cls_1"), rel=1e-9)


def test_restore_refuses_a_malformed_snapshot_and_drops_unknown_experts() -> None:
    core = learning_core()
    with pytest.raises(ValueError):
        core.graph.restore_usage({"requests": "many"})
    with pytest.raises(ValueError):
        core.graph.restore_usage({"requests": -1.0, "uses": {}})
    core.graph.restore_usage({"requests": 10.0, "uses": {"cls_5": 10.0, "gone": 5.0}})
    assert "gone" not in core.graph.usage_snapshot()["uses"]


def test_a_warm_restart_places_what_the_last_run_learned(tmp_path: Path) -> None:
    cold = placed(learning_core())
    assert cold == {"det_0", "cls_0"}  # the prior: type 0 is the commonest
    run = learning_core()
    observe(run, "cls_5", 400)  # the line now makes type-5 boards
    store = VerdictStore(tmp_path / "v.sqlite")
    store.start()
    UsageKeeper(run.graph, store, "unit").save()
    store.close()

    store = VerdictStore(tmp_path / "v.sqlite")
    store.start()
    try:
        warm = learning_core()
        line = UsageKeeper(warm.graph, store, "unit").restore()
        assert "restored" in line
        warm_placed = placed(warm)
        # the run's own learned graph would place the same (it has not placed anything yet)
        assert "cls_5" in warm_placed and warm_placed == placed(run) != cold
        other = learning_core()
        assert "no saved snapshot" in UsageKeeper(other.graph, store, "another_coe").restore()
    finally:
        store.close()


def test_the_keeper_saves_periodically_and_at_stop_and_skips_a_graph_that_does_not_learn(tmp_path: Path) -> None:
    store = VerdictStore(tmp_path / "v.sqlite")
    store.start()
    try:
        core = learning_core()
        keeper = UsageKeeper(core.graph, store, "unit", save_every_s=0.01)

        async def run() -> None:
            keeper.start()
            observe(core, "cls_3", 10)
            await asyncio.sleep(0.05)
            store.flush()
            assert store.load_usage("unit") is not None  # saved while running
            observe(core, "cls_3", 10)
            await keeper.stop()

        asyncio.run(run())
        store.flush()
        assert store.load_usage("unit") == core.graph.usage_snapshot()
        static = CoreScheduler(make_graph(), make_config(35), make_profile(), "coserve")
        UsageKeeper(static.graph, store, "static").save()
        store.flush()
        assert store.load_usage("static") is None
        assert "online_probabilities is off" in UsageKeeper(static.graph, store, "unit").restore()
    finally:
        store.close()
