"""Raw measurements -> the cost profile the core, the simulator and the planner read (pure).

Which measured number becomes which profile field (the rules of each fit are in ``profiler.fit``):

======================  ======================================================================
field                   from
======================  ======================================================================
k_s, b_s, r2            ``fit.fit_batch_line`` (least squares of relative residuals) over the
                        batch sweep's interleaved rounds (median latency per size)
max_batch               ``fit.plateau_batch`` on the fitted line, up to the largest swept size
                        (capped by the model's config)
load_time_s.disk        median warm load (file in the page cache: what a serving box that
                        switches experts all day sees) while a peer embedded server computes
                        max batches back to back (serving loads while other executors compute);
                        ``load_time_idle_s``: the same on an idle box (the figure used against
                        an external server); ``load_time_cold_s``: median cold load
load_cpu_s              ``fit.work_mean`` (trimmed mean) of the CPU seconds of the cold and warm
                        idle loads, server side: its model process and the server itself (none
                        against an external server: its processes cannot be seen)
load_watch_cores        median over the same loads of the profiler's own CPU seconds during the
                        load / its wall time (the adapter's process watch polling /proc)
first_batch_extra_s     median first one-item batch after a warm load less the sweep's median
                        one-item batch (0 at least)
host.cpu_cores          the cores this process may run on (``os.sched_getaffinity``), where the
                        server is embedded (it runs on the same host)
unload_cpu_s            ``fit.work_mean`` of the CPU seconds of the confirmed unloads of every
                        architecture: the model process's exit, the server, the profiler's own
                        watch (none against an external server)
unload_time_s           median time from the unload call until the memory is back (processes
                        gone on the embedded server; index state on an external one)
concurrent_loads        ``fit.concurrent_loads`` over 1, 2, 4 loads at once on one server, each
                        level's wall time the sum over the architectures that tried every level
                        of their median over rounds (``pooled_walls``)
storage.concurrent_     the same rule over 1, 2, 4 loads at once spread one per embedded server
loads                   (serving runs one executor per server); against an external server the
                        per-server figure
weight_bytes            median of what the expert adds once it has run every batch size, read
                        with another expert's model process loaded beside it: its model
                        process's USS + the server's growth at that load (``profiler.memory``)
                        (GPU: NVML bytes of its processes, CUDA context included); the ONNX file
                        size when memory cannot be seen (external server)
shared_bytes            the largest over the architectures of the median RSS - USS of the
                        measured model process (the pages it shares: libraries): what an
                        executor holds once beside its experts' weight_bytes
activation_bytes_per_   slope (least squares) of the peak growth against batch size, each size's
item                    growth the mean over the memory passes (one per warm load)
peak_bytes              weight_bytes + the (mean) growth at max_batch
overhead_*              ``fit.overhead`` of footprint against file size over the architectures
server_growth_bytes     the server's PSS over its idle PSS after the whole measurement (what it
                        keeps: an executor's fixed cost)
======================  ======================================================================
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from orchestrator.core.profile import ArchCost, CostProfile, ProcessorSpec
from profiler import fit
from profiler.measure import ArchMeasurement


def _spread(values: Sequence[float]) -> float:
    return round(fit.Figure.of(list(values)).spread, 4)


def pooled_walls(per_arch: Sequence[Mapping[int, Sequence[float]]]) -> dict[int, float]:
    """Wall time per number of loads at once, pooled over architectures: for the levels the most
    thorough measurement tried, the sum over every measurement that tried all of them of its
    median over rounds (the time to load ``k`` of each such architecture at once). More samples
    than one architecture's, for a decision the core schedules by."""
    levels: set[int] = set()
    for walls in per_arch:
        if len(walls) > len(levels):
            levels = set(walls)
    pooled = {k: 0.0 for k in levels}
    for walls in per_arch:
        if levels and levels <= {k for k, v in walls.items() if v}:
            for k in levels:
                pooled[k] += statistics.median(walls[k])
    return pooled if levels and any(pooled.values()) else {}


def arch_cost(m: ArchMeasurement, model_max_batch: int, channels: int = 1) -> ArchCost:
    """``m``'s costs; ``channels``: the box's load channels, whose busy load time is the profile's
    load time (a load takes that long while ``channels`` run at once and the box computes)."""
    sizes = sorted(m.batch_latency_s)
    medians = {n: statistics.median(m.batch_latency_s[n]) for n in sizes}
    line = fit.fit_batch_line(medians)
    k_s = max(line.slope, 1e-7)  # the core requires K > 0; a flat sweep means "per item ~ free"
    b_s = max(line.intercept, 0.0)
    # The plateau rule reads the fitted line, not the raw medians: per-item latency K + B/n flattens
    # smoothly, and sub-millisecond noise in single medians moved the raw rule between 4 and 16.
    best = min(fit.plateau_batch(line, sizes[-1]), max(1, model_max_batch))
    # what the expert adds beside others (its private pages, the server's growth); the pages it
    # shares are the executor's (``processor_spec``'s shared_bytes), held once (profiler.memory)
    weight = (
        int(statistics.median([f.marginal_bytes for f in m.footprints])) if m.footprints else m.file_bytes
    )
    # each size's growth: the mean over the passes. A fresh model process lays its memory out
    # differently from load to load (one pass's slope moved by +-30% between loads here), and a
    # demo detector's peak at 16 items came out ~6-8 MB in about half the loads and ~12-14 MB in
    # the others: a median of such samples flips between the two, a mean weighs them
    growth = {n: int(statistics.fmean(v)) for n, v in sorted(m.activation_bytes.items()) if v}
    activation, at_best = 0, 0
    if len(growth) >= 2:
        act = fit.fit_linear([float(n) for n in growth], [float(v) for v in growth.values()])
        activation = max(0, round(act.slope))
        at_best = max(0, round(act(float(best))))  # a max batch between swept sizes: the fitted growth
    elif growth:
        [(n, grown)] = growth.items()
        activation = grown // max(1, n)
        at_best = activation * best
    peak_growth = growth.get(best, at_best)
    steady_one = statistics.median(m.batch_latency_s[1]) if m.batch_latency_s.get(1) else line(1.0)
    first_extra = max(0.0, statistics.median(m.first_run_s) - steady_one) if m.first_run_s else None
    # the widest spread over the swept sizes stands for the batch latency figures (K and B)
    spread = {"batch_latency_s": max(_spread(v) for v in m.batch_latency_s.values())}
    # the load time the core and the simulator use: while the box computes where that was
    # measured (an embedded server with a peer), else on an idle box (measure.py says why)
    busy = m.busy_load_s.get(channels) or m.busy_load_s.get(max(m.busy_load_s, default=0), [])
    loads = busy or m.warm_load_s
    if loads:
        spread["load_time_s"] = _spread(loads)
    if m.cold_load_s:
        spread["load_time_cold_s"] = _spread(m.cold_load_s)
    if m.load_cpu_s:
        spread["load_cpu_s"] = _spread(m.load_cpu_s)
    if m.footprints:
        spread["weight_bytes"] = _spread([float(f.marginal_bytes) for f in m.footprints])
    return ArchCost(
        k_s=round(k_s, 7),
        b_s=round(b_s, 7),
        max_batch=best,
        load_time_s={"disk": round(statistics.median(loads), 4)},
        weight_bytes=weight,
        activation_bytes_per_item=activation,
        measured_expert=m.expert,
        file_bytes=m.file_bytes,
        r2=round(line.r2, 4),
        load_time_cold_s=round(statistics.median(m.cold_load_s), 4) if m.cold_load_s else None,
        load_time_idle_s=round(statistics.median(m.warm_load_s), 4) if busy and m.warm_load_s else None,
        load_cpu_s=round(fit.work_mean(m.load_cpu_s), 4) if m.load_cpu_s else None,
        load_watch_cores=round(statistics.median(m.watch_cores), 4) if m.watch_cores else None,
        first_batch_extra_s=round(first_extra, 5) if first_extra is not None else None,
        peak_bytes=weight + peak_growth,
        spread=spread,
    )


def processor_spec(
    kind_measurements: Sequence[ArchMeasurement],
    costs: Sequence[ArchCost],
    unload_mode: str,
    server_idle_bytes: int | None,
    server_growth_bytes: int | None = None,
) -> ProcessorSpec:
    unloads = [s for m in kind_measurements for s in m.unload_s]
    unload_cpu = [s for m in kind_measurements for s in m.unload_cpu_s]
    walls = pooled_walls([m.concurrent_wall_s for m in kind_measurements])
    over = fit.overhead(
        [float(c.file_bytes or 0) for c in costs], [float(c.weight_bytes or 0) for c in costs]
    )
    measured_memory = any(m.footprints for m in kind_measurements)
    # the most any architecture's processes share: each executor holds it once, whichever it runs
    shared = [int(statistics.median([f.shared_bytes for f in m.footprints])) for m in kind_measurements if m.footprints]
    return ProcessorSpec(
        concurrent_loads=fit.concurrent_loads(walls) if walls else 1,
        unload_time_s=round(statistics.median(unloads), 4) if unloads else 0.0,
        unload_cpu_s=round(fit.work_mean(unload_cpu), 4) if unload_cpu else None,
        unload_mode=unload_mode,
        server_idle_bytes=server_idle_bytes,
        server_growth_bytes=server_growth_bytes,
        shared_bytes=max(shared) if shared and max(shared) > 0 else None,
        overhead_fixed_bytes=int(over.intercept) if measured_memory else None,
        overhead_bytes_per_file_byte=round(over.slope, 4) if measured_memory else None,
    )


def spread_concurrent_loads(measurements: Sequence[ArchMeasurement]) -> int | None:
    """The box's load channels: ``fit.concurrent_loads`` over loads spread one per server (the
    serving layout); None where that was not measured (an external server)."""
    spread = pooled_walls([m.spread_wall_s for m in measurements])
    return fit.concurrent_loads(spread) if len(spread) > 1 else None


def build_profile(
    name: str,
    measurements: Sequence[ArchMeasurement],
    model_max_batch: Mapping[str, int],
    unload_mode: str,
    server_idle_bytes: int | None,
    measured: Mapping[str, str],
    server_growth_bytes: int | None = None,
    host_cpu_cores: int | None = None,
) -> CostProfile:
    """The profile of ``measurements`` (one per architecture and kind); ``host_cpu_cores``: the
    cores of the host the (embedded) server ran on, None when unknown (an external server)."""
    archs: dict[str, dict[str, ArchCost]] = {}
    procs: dict[str, ProcessorSpec] = {}
    spread = spread_concurrent_loads(measurements)
    channels = spread or 1  # busy loads are measured only where the spread is (embedded peers)
    for kind in sorted({m.kind for m in measurements}):
        ms = [m for m in measurements if m.kind == kind]
        costs = []
        for m in ms:
            cost = arch_cost(m, model_max_batch.get(m.expert, 1), channels)
            archs.setdefault(m.arch, {})[kind] = cost
            costs.append(cost)
        # the server's growth is host PSS: no part of a GPU executor's (device) budget; on a GPU
        # the serve-time watch measures the server's device memory with the experts' instead
        growth = server_growth_bytes if kind == "cpu" else None
        procs[kind] = processor_spec(ms, costs, unload_mode, server_idle_bytes, growth)
    # without a spread figure (an external server), the best within one server
    storage = spread or max((p.concurrent_loads for p in procs.values()), default=1)
    return CostProfile(
        name=name, processors=procs, architectures=archs, storage_concurrent_loads=storage, measured=dict(measured),
        host_cpu_cores=host_cpu_cores,
    )
