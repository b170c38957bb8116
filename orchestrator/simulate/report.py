"""Replays of several policies on one workload, the two bounds, and their table / JSON forms."""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.core.profile import CostProfile
from orchestrator.core.scheduler import CoreScheduler
from orchestrator.core.serve_config import ServeConfig
from orchestrator.simulate.engine import SimResult, simulate
from orchestrator.simulate.workload import Workload

BOUNDS = ("all-resident", "compulsory")


@dataclass
class Report:
    workload: str
    results: dict[str, SimResult]  # policies and bounds, by name

    def to_json_obj(self) -> dict[str, object]:
        return {name: r.summary() for name, r in sorted(self.results.items())}

    def to_json(self) -> str:
        return json.dumps(self.to_json_obj(), sort_keys=True, indent=2) + "\n"


def compulsory_bound(
    workload: Workload, config: ServeConfig, profile: CostProfile, all_resident: SimResult
) -> SimResult:
    """Every expert the task uses that CoServe's placement leaves out is loaded exactly once, as
    early as its first request allows, on the load channels of the device; loads overlap compute
    perfectly, so the makespan is the later of the all-resident makespan and the last such load
    plus one batch of its expert."""
    graph = workload.graph()
    core = CoreScheduler(graph, config, profile, "coserve")
    placed = {d.expert for d in core.initial_placement(0.0)}  # type: ignore[union-attr]
    first_use: dict[str, float] = {}
    for r in workload.requests:
        first_use.setdefault(r.preliminary, r.arrival_s)
        if r.subsequent is not None and workload.verdicts.get(r.id, False):
            first_use.setdefault(r.subsequent, r.arrival_s)
    missing = sorted((t, e) for e, t in first_use.items() if e not in placed)
    kinds = [x.cfg.kind for x in core.execs]
    kind = "gpu" if "gpu" in kinds else kinds[0]
    slots = [0.0] * profile.storage_concurrent_loads
    heapq.heapify(slots)
    end = 0.0
    for t, e in missing:
        c = profile.cost(graph.arch(e), kind)
        if c is None:
            continue
        start = max(t, heapq.heappop(slots))
        done = start + c.load_time_s["disk"]
        heapq.heappush(slots, done)
        end = max(end, done + c.batch_time_s(1))
    first = workload.requests[0].arrival_s if workload.requests else 0.0
    makespan = max(all_resident.makespan_s, end - first)
    n = all_resident.completed
    return SimResult(
        policy="compulsory",
        requests=all_resident.requests,
        completed=n,
        rejected={},
        makespan_s=makespan,
        throughput_img_s=n / makespan if makespan > 0 else 0.0,
        switches=len(missing),
        loads_by_tier={"disk": len(missing)} if missing else {},
        initial_loads=len(placed),
        p50_latency_s=all_resident.p50_latency_s,
        p99_latency_s=all_resident.p99_latency_s,
        busy_share={},
        max_wait_s=0.0,
    )


def run_report(
    workload: Workload,
    config: ServeConfig,
    profile: CostProfile,
    policies: Sequence[str],
    bounds: bool = True,
) -> Report:
    results: dict[str, SimResult] = {}
    for p in policies:
        results[p] = simulate(workload, config, profile, p)
    if bounds:
        ar = simulate(workload, config, profile, "coserve", unlimited_memory=True)
        ar.policy = "all-resident"
        ar.loads_by_tier = {}
        results["all-resident"] = ar
        results["compulsory"] = compulsory_bound(workload, config, profile, ar)
    return Report(workload.name, results)


def format_table(report: Report) -> str:
    head = f"{'policy':<15} {'img/s':>8} {'switches':>8} {'init':>5} {'p50 s':>8} {'p99 s':>8}  loads by tier / busy share"
    lines = [f"workload {report.workload}", head, "-" * len(head)]
    for name, r in report.results.items():
        tiers = ",".join(f"{k}={v}" for k, v in sorted(r.loads_by_tier.items())) or "-"
        busy = " ".join(f"{k}:{v:.0%}" for k, v in sorted(r.busy_share.items()))
        extra = f"  rejected={len(r.rejected)}" if r.rejected else ""
        lines.append(
            f"{name:<15} {r.throughput_img_s:8.2f} {r.switches:8d} {r.initial_loads:5d} "
            f"{r.p50_latency_s:8.2f} {r.p99_latency_s:8.2f}  {tiers} | {busy}{extra}"
        )
    return "\n".join(lines)
