"""Two throughput bounds no policy can beat, computed from the workload and the hardware alone.

Both are lower bounds on the makespan (last completion - first arrival) of *any* policy that runs
on a layout a registered policy derives from the serve config (``core.layout``), from *any* start
state that fits the budgets, on the simulator's hardware model (docs/simulator.md, "Bounds").
They are proven, not replayed: a replay of one policy is not a bound for another.

- **all-resident**: every expert resident everywhere, nothing ever loaded. A request completes no
  earlier than its arrival plus one batch of one for each step on the fastest executor able to run
  it; and the work of the requests arriving at or after any arrival time ``t`` (per item at least
  ``K + B/max_batch`` on the executor doing it) needs at least its fluid makespan after ``t`` (an LP
  over the executors, bounded below through its dual: any weights ``w`` on the executors summing
  to 1 give ``sum_a n_a min_e(w_e c_ae)``). The bound is the smallest over the layouts.
- **compulsory**: on each layout, its all-resident bound and additionally the best conceivable
  start (as many of the needed experts resident as that layout's memory holds, chosen to minimise
  the bound: a fractional knapsack, which can only make the bound lower), every other needed
  expert loaded from disk exactly once at the fastest disk load time of any of the layout's
  executors able to run it (with the shared-
  cores model, the shorter of the busy figure and the idle one a load alone takes), on the box's
  ``storage.concurrent_loads`` channels, starting at the first arrival, overlapping compute
  perfectly; the last of those loads is followed by at least one batch. Never above all-resident.
  With the shared-cores model (``host.cpu_cores``; ``simulate.cpu``) also no shorter than the CPU
  work no policy avoids spread over every core at once: each load of an expert the start does not
  hold costs its ``load_cpu_s`` (the least of any executor able to run it; that start chosen
  again, by a fractional knapsack of CPU seconds per byte, to minimise this term), and each
  counted step that no non-CPU executor can run costs at least ``K + B / max_batch`` CPU seconds
  per item (a CPU batch is one core's work for its whole duration). Unloads, the load watch and
  first-batch extras are left out, which can only make the bound lower. The bound is the
  smallest of the layouts' (a policy runs on one of them). Until 2026-12-02 it took the
  roomiest layout's start beside the fastest layout's all-resident bound and every layout's
  fastest loads, a valid but looser mix: Samba-CoE's one process holds the most, the
  four-executor layouts compute the fastest, and no layout does both.
  With ``start_empty`` (cold start: every policy starts empty) nothing is resident at the start.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from orchestrator.core.layout import executors_for
from orchestrator.core.policies import POLICIES
from orchestrator.core.profile import CostProfile
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.simulate.engine import SimResult, percentile
from orchestrator.simulate.workload import Workload

Layout = tuple[tuple[ExecutorConfig, ...], int]  # executors, CPU cache bytes


def layouts(config: ServeConfig) -> list[Layout]:
    """Every distinct layout a registered policy runs on, from this serve config."""
    out: list[Layout] = []
    for name in sorted(POLICIES):
        lay = executors_for(POLICIES[name], config)
        if lay not in out:
            out.append(lay)
    return out


@dataclass(frozen=True)
class Bounds:
    counted: int  # requests the bounds are for
    all_resident_s: float  # makespan lower bounds, from the first arrival
    compulsory_s: float
    #: needed experts no start state of any layout holds: every policy makes at least this many
    #: disk loads (the fewest over the layouts, which need not be the binding layout's)
    compulsory_loads: int
    start_resident: int  # needed experts the best start of the roomiest layout holds
    needed: int
    step_floor_s: list[float]  # per counted request: its latency lower bound
    #: the compulsory bound's parts on the layout that sets it (the bound is the largest of them
    #: and that layout's all-resident bound): the loads on the storage channels; the CPU work on
    #: the shared cores (0 without host.cpu_cores)
    channels_s: float = 0.0
    cpu_work_s: float = 0.0
    #: needed experts the best start of the layout that sets the compulsory bound holds (which
    #: need not be the roomiest: ``start_resident``)
    binding_start_resident: int = 0
    #: needed experts no executor of any layout can run (no cost for its kind, or larger than its
    #: budget): then no layout serves every counted request, there is no bound, and the makespans
    #: are infinite (throughput 0), never a figure no policy could reach
    unrunnable: tuple[str, ...] = ()

    def row(self, name: str, requests: int) -> SimResult:
        all_res = name == "all-resident"
        makespan = self.all_resident_s if all_res else self.compulsory_s
        loads = 0 if all_res else self.compulsory_loads
        return SimResult(
            policy=name,
            requests=requests,
            completed=self.counted,
            rejected={},
            makespan_s=makespan,
            throughput_img_s=self.counted / makespan if makespan > 0 else 0.0,
            switches=loads,
            loads_by_tier={"disk": loads} if loads else {},
            initial_loads=self.needed if all_res else self.start_resident,
            p50_latency_s=percentile(self.step_floor_s, 50),
            p99_latency_s=percentile(self.step_floor_s, 99),
            busy_share={},
            max_wait_s=0.0,
        )


def _steps(workload: Workload, ids: Collection[int] | None) -> list[tuple[float, tuple[str, ...]]]:
    out = []
    for r in workload.requests:
        if ids is not None and r.id not in ids:
            continue
        steps: tuple[str, ...] = (r.preliminary,)
        if r.subsequent is not None and workload.verdicts.get(r.id, False):
            steps = (r.preliminary, r.subsequent)
        out.append((r.arrival_s, steps))
    return out


@dataclass(frozen=True)
class _Run:
    """What running one expert on one executor costs (inf where it cannot run there)."""

    per_item_s: float  # the best per-item batch time, K + B / max_batch
    batch_of_one_s: float
    load_s: float  # one disk load
    nbytes: int
    load_cpu_s: float  # CPU work of one disk load on the shared cores (0: not modelled)
    item_cpu_s: float  # CPU work per item of a batch on the shared cores (0: none)


_CANNOT = _Run(math.inf, math.inf, math.inf, 0, math.inf, math.inf)


def _runs(
    workload: Workload, profile: CostProfile, execs: Sequence[ExecutorConfig], expert: str
) -> list[_Run]:
    """What ``expert`` costs on each executor of ``execs`` (``_CANNOT`` where it cannot run: no
    cost entry, no bytes, or too big for its budget)."""
    graph_nodes = {n.name: n for n in workload.graph_nodes}
    node = graph_nodes[expert]
    shared = bool(profile.host_cpu_cores)
    out = []
    for e in execs:
        c = profile.cost(node.arch, e.kind)
        nbytes = node.bytes_by_kind.get(e.kind)
        if c is None or nbytes is None or nbytes + c.activation_bytes_per_item > e.budget_bytes:
            out.append(_CANNOT)
            continue
        load = c.load_time_s["disk"]
        if shared and c.load_cpu_s:
            # shared cores (simulate.cpu): a load alone on the cores takes its idle time, which
            # may be shorter than the busy figure; the bound must not assume the slower one
            load = min(load, c.load_time_idle_s or load)
        per_item = c.k_s + c.b_s / c.max_batch
        out.append(
            _Run(
                per_item_s=per_item,
                batch_of_one_s=c.k_s + c.b_s,
                load_s=load,
                nbytes=nbytes,
                load_cpu_s=(c.load_cpu_s or 0.0) if shared else 0.0,
                # the simulator runs a CPU executor's batch as one core's work (simulate.cpu)
                item_cpu_s=per_item if shared and e.kind == "cpu" else 0.0,
            )
        )
    return out


def _layout_floor(
    workload: Workload,
    profile: CostProfile,
    execs: Sequence[ExecutorConfig],
    steps: list[tuple[float, tuple[str, ...]]],
    first: float,
) -> tuple[float, list[float]] | None:
    """The all-resident makespan bound on one layout and each request's latency floor there
    (None if the layout cannot serve every counted request)."""
    experts = sorted({x for _, s in steps for x in s})
    runs = {x: _runs(workload, profile, execs, x) for x in experts}
    one = {x: min(r.batch_of_one_s for r in runs[x]) for x in experts}
    if any(math.isinf(v) for v in one.values()):
        return None
    floors = [sum(one[x] for x in s) for _, s in steps]
    bound = max((t + f - first for (t, _), f in zip(steps, floors, strict=True)), default=0.0)
    # fluid bound over suffixes, one candidate dual (executor weights) per cost class plus uniform
    classes = sorted({tuple(r.per_item_s for r in runs[x]) for x in experts})
    n = len(execs)
    weights = [[1.0 / n] * n]
    for cls in classes:
        rates = [0.0 if math.isinf(c) else 1.0 / c for c in cls]
        total = sum(rates)
        weights.append([r / total for r in rates])
    per_item: dict[str, list[float]] = {}
    for x in experts:
        costs = [r.per_item_s for r in runs[x]]
        per_item[x] = [
            min(c * w for c, w in zip(costs, ws, strict=True) if not math.isinf(c)) for ws in weights
        ]
    suffix = [0.0] * len(weights)
    for t, s in reversed(steps):
        for x in s:
            for j, v in enumerate(per_item[x]):
                suffix[j] += v
        bound = max(bound, t - first + max(suffix))
    return bound, floors


def _best_kept(value: dict[str, float], size: dict[str, int], capacity: int) -> float:
    """The most of ``value`` a start of ``capacity`` bytes can hold (fractional knapsack by value
    per byte: an upper bound on what any whole set of experts that fits holds)."""
    kept, room = 0.0, float(capacity)
    for x in sorted(value, key=lambda x: (-value[x] / max(size[x], 1), x)):
        if room <= 0:
            break
        share = min(1.0, room / max(size[x], 1))
        kept += share * value[x]
        room -= share * size[x]
    return kept


@dataclass(frozen=True)
class _Compulsory:
    """The compulsory bound on one layout and its parts."""

    makespan_s: float
    loads: int  # needed experts no start on the layout holds
    kept: int  # needed experts the best start holds
    channels_s: float
    cpu_work_s: float


def _layout_compulsory(
    workload: Workload,
    profile: CostProfile,
    layout: Layout,
    steps: list[tuple[float, tuple[str, ...]]],
    all_resident_s: float,
    start_empty: bool,
) -> _Compulsory:
    """The compulsory makespan bound of any policy running on ``layout`` (module doc), with
    ``all_resident_s`` that layout's all-resident bound."""
    execs, cache = layout
    needed = sorted({x for _, s in steps for x in s})
    load: dict[str, float] = {}
    size: dict[str, int] = {}
    batch: dict[str, float] = {}
    load_cpu: dict[str, float] = {}
    item_cpu: dict[str, float] = {}
    for x in needed:
        runs = [r for r in _runs(workload, profile, execs, x) if not math.isinf(r.per_item_s)]
        load[x] = min(r.load_s for r in runs)
        size[x] = min(r.nbytes for r in runs)
        batch[x] = min(r.batch_of_one_s for r in runs)
        load_cpu[x] = min(r.load_cpu_s for r in runs)
        item_cpu[x] = min(r.item_cpu_s for r in runs)
    smallest = min(size.values())
    capacity = 0
    if not start_empty:  # an executor too small for any needed expert holds none of them
        capacity = sum(e.budget_bytes for e in execs if e.budget_bytes >= smallest) + cache
    # fewest loads: keep the smallest experts; least load time left: fractional knapsack by s/byte
    kept_count, room = 0, capacity
    for x in sorted(needed, key=lambda x: (size[x], x)):
        if size[x] > room:
            break
        room -= size[x]
        kept_count += 1
    left_s = sum(load.values()) - _best_kept(load, size, capacity)
    by_tail = sorted(needed, key=lambda x: (-(load[x] + batch[x]), x))
    tail, room = 0.0, capacity
    for x in by_tail:  # the longest load + batch that cannot be kept resident
        if size[x] > room:
            tail = load[x] + batch[x]
            break
        room -= size[x]
    loads_s = left_s / profile.storage_concurrent_loads + min(batch.values()) if left_s > 1e-9 else 0.0
    cpu_s = 0.0
    if profile.host_cpu_cores:  # the CPU work no start avoids, on every core at once
        left_cpu = sum(load_cpu.values()) - _best_kept(load_cpu, size, capacity)
        compute_cpu = sum(item_cpu[x] for _, s in steps for x in s)
        cpu_s = (left_cpu + compute_cpu) / profile.host_cpu_cores
    return _Compulsory(
        makespan_s=max(all_resident_s, loads_s, tail, cpu_s),
        loads=len(needed) - kept_count,
        kept=kept_count,
        channels_s=max(loads_s, tail),
        cpu_work_s=cpu_s,
    )


def compute_bounds(
    workload: Workload,
    config: ServeConfig,
    profile: CostProfile,
    *,
    start_empty: bool = False,
    ids: Collection[int] | None = None,
) -> Bounds:
    """Both bounds for the requests ``ids`` (default: all) of ``workload``; times are measured from
    the first arrival of the whole task (when loads may start). Each is the smallest over the
    layouts of that layout's bound: a policy runs on one layout, so no policy beats the smallest."""
    first = workload.requests[0].arrival_s if workload.requests else 0.0
    steps = _steps(workload, ids)
    if not steps:
        return Bounds(len(steps), 1e-12, 1e-12, 0, 0, 0, [])
    best: tuple[float, list[float]] | None = None
    floors_min: list[float] | None = None
    compulsory: _Compulsory | None = None
    fewest_loads, most_kept = math.inf, 0  # over the layouts: what no policy does better
    for lay in layouts(config):
        res = _layout_floor(workload, profile, lay[0], steps, first)
        if res is None:
            continue
        if best is None or res[0] < best[0]:
            best = res
        floors_min = (
            res[1] if floors_min is None else [min(a, b) for a, b in zip(floors_min, res[1], strict=True)]
        )
        here = _layout_compulsory(workload, profile, lay, steps, max(res[0], 1e-12), start_empty)
        if compulsory is None or here.makespan_s < compulsory.makespan_s:
            compulsory = here
        fewest_loads, most_kept = min(fewest_loads, here.loads), max(most_kept, here.kept)
    if best is None or compulsory is None:
        needed = sorted({x for _, s in steps for x in s})
        unrunnable = tuple(
            x for x in needed
            if all(math.isinf(r.batch_of_one_s) for lay in layouts(config) for r in _runs(workload, profile, lay[0], x))
        )
        return Bounds(len(steps), math.inf, math.inf, 0, 0, len(needed), [], unrunnable=unrunnable)
    return Bounds(
        counted=len(steps),
        all_resident_s=max(best[0], 1e-12),
        compulsory_s=compulsory.makespan_s,
        compulsory_loads=int(fewest_loads),
        start_resident=most_kept,
        needed=len({x for _, s in steps for x in s}),
        step_floor_s=floors_min or [],
        channels_s=compulsory.channels_s,
        cpu_work_s=compulsory.cpu_work_s,
        binding_start_resident=compulsory.kept,
    )
