"""The methods on a small case: the choice rule, the run budget, held-out seeds, the written config."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.serve_config import load_serve_config_text
from orchestrator.plan.evaluate import BudgetSpent, holdout_seeds, search_seeds
from orchestrator.plan.memory import Candidate
from orchestrator.plan.paper import count_candidates, paper_method
from orchestrator.plan.result import make_plan, serve_config_text
from orchestrator.plan.trials import Trial, pick
from orchestrator.serve_file import parse_serve_file
from orchestrator.simulate.presets import Preset

from .conftest import small_evaluator


def _trial(executors: int, score: float) -> Trial:
    return Trial(Candidate(executors, ()), f"{executors}", None, score, executors, "count")  # type: ignore[arg-type]


def _picked(trials: list[Trial], tolerance: float) -> int:
    t = pick(trials, tolerance)
    assert t is not None
    return t.executors


def test_fewer_executors_win_only_within_the_tolerance() -> None:
    trials = [_trial(1, 10.0), _trial(2, 10.05), _trial(3, 10.5)]
    assert _picked(trials, 0.01) == 3  # 1 and 2 are more than 1% below the best
    assert _picked(trials, 0.05) == 1  # within 5%: the fewest executors
    assert _picked([_trial(2, 10.0), _trial(1, 9.95)], 0.01) == 1
    assert pick([], 0.01) is None


def test_search_seeds_never_include_the_held_out_seed() -> None:
    assert 5 not in search_seeds(5, 4) and holdout_seeds(5, 3)[0] == 5
    assert not set(search_seeds(5, 4)) & set(holdout_seeds(5, 3))


def test_the_run_budget_is_kept_and_runs_are_cached(numa: Preset) -> None:
    ev = small_evaluator(numa, seeds=2, max_runs=4)
    c1, c2, c3 = (Candidate(n, (1.0,)) for n in (1, 2, 3))
    a = ev.score(c1)
    assert ev.score(c1) == a and ev.runs == 2  # cached: no new run
    ev.score(c2)
    with pytest.raises(BudgetSpent):
        ev.score(c3)
    assert ev.runs == 4


def test_paper_method_picks_the_count_its_trials_rank_best_and_searches_resident_experts(numa: Preset) -> None:
    ev = small_evaluator(numa)
    res = paper_method(ev, max_gpu_per_device=3, max_cpu=1, tolerance=0.0)
    counts = [t for t in res.trials if t.stage == "count"]
    assert len(counts) == len(count_candidates(1, 3, 1))
    best_count = max(counts, key=lambda t: t.score)
    assert res.chosen is not None
    assert res.chosen.candidate.gpus_per_device == best_count.candidate.gpus_per_device
    assert res.chosen.candidate.cpu_shares == best_count.candidate.cpu_shares
    window = [t for t in res.trials if t.stage == "window"]
    assert window and any(t.candidate.gpu_resident is not None for t in window)
    assert res.chosen.score == max(t.score for t in res.trials if t.candidate.gpus_per_device ==
                                   best_count.candidate.gpus_per_device and t.candidate.cpu_shares ==
                                   best_count.candidate.cpu_shares)
    assert res.runner_up is not None and res.runner_up.layout.written != res.chosen.layout.written


def test_best_is_within_five_percent_of_a_grid_scored_on_held_out_seeds(numa: Preset) -> None:
    ev = small_evaluator(numa, seeds=2, max_runs=120)
    plan = make_plan(ev, "best", max_gpu_per_device=3, max_cpu=1)
    held = holdout_seeds(ev.workload.seed, 2)
    grid = []
    for cand in count_candidates(1, 3, 1):
        lay = ev.layout(cand)
        if lay is not None:
            grid.append(ev.score_config(lay.simulated, held))
    chosen = ev.score_config(plan.chosen.layout.simulated, held)
    assert chosen >= 0.95 * max(grid)
    assert set(plan.methods) == {"paper", "simulated"} and plan.runs <= 120


def test_the_written_config_is_read_by_the_core_and_by_serve(numa: Preset, tmp_path: Path) -> None:
    ev = small_evaluator(numa)
    plan = make_plan(ev, "paper", max_gpu_per_device=2, max_cpu=1)
    text = serve_config_text(plan, {"coe": "coe.yaml", "repo": "repo", "profile": "repo/profile.yaml"}, "coserve plan x")
    assert "# predicted throughput" in text and "# runner-up: " in text and "simulated runs:" in text
    cfg = load_serve_config_text(text, "plan.yaml")
    assert cfg.executors == plan.chosen.layout.written.executors and cfg.policy == "coserve"
    import yaml

    spec = parse_serve_file(yaml.safe_load(text), "plan.yaml", tmp_path)
    assert spec.coe == tmp_path / "coe.yaml" and spec.config == cfg
