"""What a search tried and how a winner is picked from its trials.

Contract: ``pick`` returns the trial with the best score, except that a trial with fewer executors
within ``tolerance`` (a share of the best score) wins over it: a gain that small is within the
simulator's seed-to-seed noise and does not pay for another process and its memory. Ties then go
to the higher score, then to the earlier trial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.plan.memory import Candidate, Layout

DEFAULT_TOLERANCE = 0.01


@dataclass(frozen=True)
class Trial:
    candidate: Candidate
    label: str
    layout: Layout
    score: float  # mean simulated img/s over the search seeds
    executors: int
    stage: str  # which step of the method tried it

    def row(self) -> dict[str, object]:
        return {"label": self.label, "stage": self.stage, "predicted_img_s": round(self.score, 3)}


@dataclass
class MethodResult:
    method: str
    chosen: Trial | None
    runner_up: Trial | None
    trials: list[Trial] = field(default_factory=list)
    searched: list[str] = field(default_factory=list)  # one line per step, for the comment block
    runs: int = 0
    budget_spent: bool = False


def pick(trials: Sequence[Trial], tolerance: float = DEFAULT_TOLERANCE) -> Trial | None:
    if not trials:
        return None
    best = max(trials, key=lambda t: t.score)
    close = [t for t in trials if t.score >= best.score * (1.0 - tolerance)]
    return min(close, key=lambda t: (t.executors, -t.score, trials.index(t)))


def runner_up(trials: Sequence[Trial], chosen: Trial | None) -> Trial | None:
    """The best-scoring trial with another layout than ``chosen``."""
    others = [t for t in trials if chosen is None or t.layout.written != chosen.layout.written]
    return max(others, key=lambda t: t.score, default=None)
