"""A search driven by the simulator on the profile: executor counts, memory splits, features.

1. Every executor count (as the paper's step 1; the runs are shared through the evaluator's cache).
2. For the ``top`` best counts, one axis at a time: uneven splits of host memory between two or
   more CPU executors (``SPLITS``), part of host memory as a CPU cache tier for GPU loads
   (``CACHE_SHARES``, only with GPU executors and a CPU executor left), and each beyond-paper
   feature the policy does not turn on already (``FEATURE_TRIALS``).
3. The best value of every axis that helped, together.

The winner is picked by ``trials.pick`` over every trial. The budget of simulated runs is the
evaluator's; when it is spent the search stops and picks from what it ran (and says so).
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.core.policies import get_policy
from orchestrator.plan.evaluate import BudgetSpent, Evaluator
from orchestrator.plan.memory import Candidate
from orchestrator.plan.paper import count_candidates, try_candidate
from orchestrator.plan.trials import DEFAULT_TOLERANCE, MethodResult, Trial, pick, runner_up

#: host-memory splits tried between two CPU executors
SPLITS: tuple[tuple[float, float], ...] = ((0.65, 0.35), (0.8, 0.2))
CACHE_SHARES: tuple[float, ...] = (0.25,)
FEATURE_TRIALS: tuple[str, ...] = ("serve_resident", "prefetch")


def split_variants(cand: Candidate) -> list[Candidate]:
    """Uneven splits of host memory between exactly two CPU executors (more: even only)."""
    if len(cand.cpu_shares) != 2:
        return []
    return [replace(cand, cpu_shares=(a, b)) for a, b in SPLITS]


def cache_variants(cand: Candidate, devices: int) -> list[Candidate]:
    if not devices or not cand.gpus_per_device or not cand.cpu_shares:
        return []
    return [replace(cand, cache_share=s) for s in CACHE_SHARES]


def feature_variants(cand: Candidate, policy: str) -> list[Candidate]:
    own = set(get_policy(policy).features)
    return [replace(cand, features=(*cand.features, f)) for f in FEATURE_TRIALS if f not in own]


def simulated_method(
    ev: Evaluator,
    *,
    max_gpu_per_device: int = 6,
    max_cpu: int = 2,
    top: int = 2,
    tolerance: float = DEFAULT_TOLERANCE,
) -> MethodResult:
    devices = len(ev.machine.gpu_bytes)
    res = MethodResult("simulated", None, None)
    trials: list[Trial] = []
    try:
        for cand in count_candidates(devices, max_gpu_per_device, max_cpu):
            try_candidate(ev, cand, "count", trials)
        ranked = sorted(trials, key=lambda t: -t.score)[:top]
        res.searched.append(
            f"simulated step 1, executor counts: {len(trials)} layouts; best "
            + ", ".join(f"{t.label} {t.score:.2f}" for t in ranked)
        )
        axes = 0
        for base in ranked:
            combined = base.candidate
            for axis in (split_variants, lambda c: cache_variants(c, devices), lambda c: feature_variants(c, ev.policy)):
                best_axis: Trial | None = None
                for cand in axis(base.candidate):
                    t = try_candidate(ev, cand, "axis", trials)
                    axes += 1
                    if t is not None and t.score > base.score and (best_axis is None or t.score > best_axis.score):
                        best_axis = t
                if best_axis is not None:
                    c = best_axis.candidate
                    combined = replace(
                        combined,
                        cpu_shares=c.cpu_shares if c.cpu_shares != base.candidate.cpu_shares else combined.cpu_shares,
                        cache_share=c.cache_share or combined.cache_share,
                        features=tuple(dict.fromkeys((*combined.features, *c.features))),
                    )
            if combined != base.candidate:
                try_candidate(ev, combined, "combined", trials)
        res.searched.append(
            f"simulated step 2, one axis at a time on the best {len(ranked)} counts: {axes} layouts "
            f"(CPU splits {', '.join(f'{a:.0%}/{b:.0%}' for a, b in SPLITS)}; cache tier "
            f"{', '.join(f'{s:.0%}' for s in CACHE_SHARES)} of host memory with GPU executors; features "
            f"{', '.join(f for f in FEATURE_TRIALS if f not in get_policy(ev.policy).features) or 'none'}), "
            "then the helpful values together"
        )
    except BudgetSpent:
        res.budget_spent = True
        res.searched.append("simulated: the budget of runs was spent; picked from what ran")
    res.trials = trials
    res.chosen = pick(trials, tolerance)
    res.runner_up = runner_up(trials, res.chosen)
    res.runs = ev.runs
    return res
