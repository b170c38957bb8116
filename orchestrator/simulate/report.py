"""Replays of several policies on one workload, the two bounds, and their table / JSON forms."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.core.profile import CostProfile
from orchestrator.core.serve_config import ServeConfig
from orchestrator.simulate.bounds import compute_bounds
from orchestrator.simulate.engine import SimResult, simulate
from orchestrator.simulate.workload import Workload

BOUNDS = ("all-resident", "compulsory")


@dataclass
class Report:
    workload: str
    results: dict[str, SimResult]  # policies and bounds, by name
    #: what the table says below its rows (a bound that does not exist, and why)
    notes: tuple[str, ...] = ()

    def to_json_obj(self) -> dict[str, object]:
        """One flat object: policy (or bound) name -> its summary."""
        return {name: r.summary() for name, r in sorted(self.results.items())}

    def to_json(self) -> str:
        return json.dumps(self.to_json_obj(), sort_keys=True, indent=2) + "\n"


def run_report(
    workload: Workload,
    config: ServeConfig,
    profile: CostProfile,
    policies: Sequence[str],
    bounds: bool = True,
    *,
    warmup_tasks: int = 1,
) -> Report:
    """Every policy from the same start (``warmup_tasks`` prior tasks; 0: cold start), then the
    all-resident and compulsory bounds for that start mode."""
    results: dict[str, SimResult] = {}
    notes: list[str] = []
    for p in policies:
        results[p] = simulate(workload, config, profile, p, warmup_tasks=warmup_tasks)
    if bounds:
        b = compute_bounds(workload, config, profile, start_empty=warmup_tasks == 0)
        for name in BOUNDS:
            results[name] = b.row(name, len(workload.requests))
        if b.unrunnable:
            notes.append(
                f"no bounds: no executor can run {', '.join(b.unrunnable)} (the profile has no cost for "
                "its kind, or it is larger than every budget), so no policy serves every request"
            )
        elif math.isinf(b.compulsory_s):
            notes.append("no bounds: no policy's executor layout runs every needed expert")
    return Report(workload.name, results, tuple(notes))


def format_table(report: Report) -> str:
    head = f"{'policy':<15} {'img/s':>8} {'switches':>8} {'init':>5} {'p50 s':>8} {'p99 s':>8}  loads by tier / busy share"
    lines = [f"workload {report.workload}", head, "-" * len(head)]
    for name, r in report.results.items():
        tiers = ",".join(f"{k}={v}" for k, v in sorted(r.loads_by_tier.items())) or "-"
        busy = " ".join(f"{k}:{v:.0%}" for k, v in sorted(r.busy_share.items()))
        extra = f"  rejected={len(r.rejected)}" if r.rejected else ""
        if name in BOUNDS and math.isinf(r.makespan_s):  # no bound exists (Report.notes says why)
            lines.append(f"{name:<15} {'n/a':>8}")
            continue
        lines.append(
            f"{name:<15} {r.throughput_img_s:8.2f} {r.switches:8d} {r.initial_loads:5d} "
            f"{r.p50_latency_s:8.2f} {r.p99_latency_s:8.2f}  {tiers} | {busy}{extra}"
        )
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
