"""The simulator on a candidate layout, over the search seeds, within a budget of runs.

Contract: ``Evaluator.score(candidate)`` is the mean simulated throughput (img/s) of the
candidate's layout over ``seeds`` redraws of the workload (the same board, mix, request count and
interval; each run after the same start: ``warmup_requests`` requests of another seed, or one full
prior task when None), or None when the layout does not fit. Every distinct layout is simulated
once (cached), and each simulated task counts one run against ``max_runs``: once the budget is
spent ``score`` raises ``BudgetSpent`` for a layout not seen before. ``progress(done, total)`` is
called after every run. The seeds the search uses are never the workload's own seed, so a grade on
that seed is a grade on samples the search did not see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from orchestrator.core.features import Features
from orchestrator.core.profile import CostProfile
from orchestrator.core.serve_config import ServeConfig
from orchestrator.plan.memory import Candidate, Layout, Machine, Overheads, candidate_config
from orchestrator.simulate.engine import Simulation
from orchestrator.simulate.workload import Workload

Progress = Callable[[int, int], None]


class BudgetSpent(Exception):
    """The budget of simulated runs is spent."""


def search_seeds(base_seed: int, n: int) -> tuple[int, ...]:
    """``n`` seeds for the search, none equal to ``base_seed`` (the held-out one)."""
    return tuple(base_seed * 7919 + 104_729 * (k + 1) for k in range(n))


def holdout_seeds(base_seed: int, n: int) -> tuple[int, ...]:
    """``n`` held-out seeds for grading: ``base_seed`` itself, then seeds the search never uses."""
    return (base_seed, *(base_seed * 31 + 15_485_863 * (k + 1) for k in range(n - 1)))


def task_for_seed(workload: Workload, seed: int) -> Workload:
    return workload if seed == workload.seed else workload.redraw(seed)


def short_warmup(workload: Workload, requests: int, seed: int) -> Workload:
    """A warm-up task of ``requests`` requests from the workload's mix, drawn with ``seed``."""
    n = max(1, min(requests, len(workload.requests)))
    head = replace(
        workload,
        requests=workload.requests[:n],
        verdicts={i: workload.verdicts[i] for i in range(n)},
        request_types=workload.request_types[:n],
    )
    return head.redraw(seed, f"{workload.name}-warmup")


def simulate_layout(
    workload: Workload, config: ServeConfig, profile: CostProfile, policy: str, warmup_requests: int | None
) -> float:
    """One simulated task's throughput (img/s) after the start rule of the module doc."""
    if warmup_requests is None:
        sim = Simulation(workload, config, profile, policy, warmup_tasks=1)
    else:
        sim = Simulation(workload, config, profile, policy, warmup_tasks=0)
        if warmup_requests > 0:
            sim.warmups = [short_warmup(workload, warmup_requests, workload.seed * 13 + 7)]
    return sim.run().throughput_img_s


@dataclass
class Evaluator:
    workload: Workload
    profile: CostProfile
    machine: Machine
    overheads: Overheads
    policy: str
    seeds: Sequence[int]
    max_runs: int
    warmup_requests: int | None = None
    base_features: Features = field(default_factory=Features)
    progress: Progress | None = None
    runs: int = 0
    scores: dict[ServeConfig, float] = field(default_factory=dict)
    _tasks: dict[int, Workload] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.graph = self.workload.graph()

    def layout(self, cand: Candidate) -> Layout | None:
        return candidate_config(
            cand, self.machine, self.overheads, self.profile, self.graph, self.policy, self.base_features
        )

    def left(self) -> int:
        return self.max_runs - self.runs

    def score(self, cand: Candidate) -> float | None:
        lay = self.layout(cand)
        if lay is None:
            return None
        return self.score_config(lay.simulated)

    def score_config(self, config: ServeConfig, seeds: Sequence[int] | None = None) -> float:
        """Mean throughput of ``config`` (already as the engine runs it) over ``seeds`` (default:
        the search seeds; those runs are cached and counted)."""
        if seeds is not None:
            return sum(self._run(config, s) for s in seeds) / len(seeds)
        if config in self.scores:
            return self.scores[config]
        if self.runs + len(self.seeds) > self.max_runs:
            raise BudgetSpent
        total = 0.0
        for s in self.seeds:
            total += self._run(config, s)
            self.runs += 1
            if self.progress is not None:
                self.progress(self.runs, self.max_runs)
        self.scores[config] = total / len(self.seeds)
        return self.scores[config]

    def _run(self, config: ServeConfig, seed: int) -> float:
        if seed not in self._tasks:
            self._tasks[seed] = task_for_seed(self.workload, seed)
        return simulate_layout(self._tasks[seed], config, self.profile, self.policy, self.warmup_requests)
