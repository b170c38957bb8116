"""Benchmark: what the orchestrator adds over a direct Triton infer of the same expert.

On the demo board (exported into ``--repo``; ``coserve demo`` does that), with one embedded
tritonserver and the service in the same process:
1. direct: ``--calls`` sequential ``TritonAdapter.infer`` calls (batch 1, raw FP32 tensor) on a
   classifier that is loaded;
2. through the service: ``--calls`` sequential ``Inspect`` calls over gRPC with the typed client
   (raw tensor input) for a component type routed to that classifier and to no detector, so each
   call is one classifier inference; the expert stays resident (the budget holds the board).
Reports p50/p90/p99 of both and the difference of the medians (acceptance: under 1 ms at p50).
Both sides run on the same server, alternating in blocks so that drift hits both alike, and both
clients run in a separate process (as a factory client would), so the orchestrator's figure is
what the service adds, not the cost of the client sharing its interpreter.

``--verdict-log both`` (the default) also measures what the verdict log adds (acceptance: under
0.5 ms at p50): a second service, identical but for a verdict log (``--sync``; its file in a
temporary directory under ``--log-dir``), runs beside the first with its own embedded server,
and a third series of calls goes through it, in the same alternating blocks. Every call names a
new component of a board id unique to the run, so each is inspected and logged (a repeated id
would be answered from the log). ``off`` measures the service without a log only (as before).

``--floor`` also measures the floor of any Python gRPC front end on this box: a minimal proxy
(``FloorProxy``: the same ``Inspect`` proto and typed client, a ``grpc.aio`` server on the
service's event loop and process, and behind it nothing but ``np.frombuffer``, one
``TritonAdapter.infer`` on the same server and the verdict proto; no validation, engine, core,
memory sampler or watchdog of its own) in a fourth series of the same alternating blocks.
What it adds over the direct infer is what the gRPC hop alone costs; the service's added latency
can get no lower than that with a Python gRPC front end in the path.

``--cpu`` (a diagnostic) also reports the CPU time each process spends per call, by series, from
/proc: the client, the service's main thread (its event loop) and its other threads, its
tritonserver and model processes (``CpuMeter``). Their sum against a call's wall time says how
busy the box is while a call runs: on a box whose cores the four processes share, CPU anyone adds
is latency.

``--trace`` (a diagnostic, not the measurement: its marks add a few microseconds per call) also
splits each call through the service without a log into where its time went, from marks on one
clock shared by both processes (``time.perf_counter_ns`` is CLOCK_MONOTONIC on Linux): the
request's way in (client serialisation, the gRPC hop, the server's gRPC machinery, the front
end's validation) up to ``Engine.inspect``; the engine up to the Triton call; the Triton infer
inside the service (beside the direct one, which the client times the same way); the engine
after it; and the verdict's way back out to the client. The marks come from instance wrappers
installed through ``run_service``'s ``on_engine`` hook (the engine's ``inspect``, its adapters'
``infer``), so nothing in the orchestrator changes. It also reads Triton's own inference
statistics for the expert before and after every block (outside the timed calls) and prints what
Triton says each request took inside the server (queue, compute input/infer/output, the whole
request) for the direct calls and for the service's: a slower infer inside the service that
Triton itself took longer over (CPU shared with the service and the client on a small box) shows
there, one that only arrived later does not.

The service side runs on the event loop ``coserve serve`` runs on (``orchestrator.aio``: uvloop
where installed); ``--service-loop asyncio|uvloop`` picks one for an A/B. The client process keeps
asyncio's, so the direct side is the same either way. The result records which loop served
(``service_loop``).

Run:  .venv/bin/python benchmarks/serve_overhead.py [--repo model_repository] [--calls 1000]
      [--verdict-log both|off] [--sync normal|full] [--log-dir DIR] [--trace]
      [--service-loop asyncio|uvloop] [--cpu] [--floor]
Writes benchmarks/results/serve_overhead.json (``--out``; the committed ``sync=full`` figure is
``serve_overhead.sync_full.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml

from orchestrator import aio, experts_io
from orchestrator.client import InspectionClient
from orchestrator.coe import load_coe
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.engine.engine import Engine
from orchestrator.engine.types import InspectRequest, Verdict
from orchestrator.frontend import inspection_pb2 as pb
from orchestrator.frontend import inspection_pb2_grpc as pb_grpc
from orchestrator.serve import Service, run_service
from orchestrator.serve_file import ServeFile, ServerSpec
from orchestrator.triton import processes
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton, free_port
from orchestrator.verdicts.config import VerdictLogConfig
from profiler.run import machine_description


def _q(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q))


def _quantiles(values: list[float]) -> dict[str, float]:
    return {"p50": _q(values, 0.5), "p90": _q(values, 0.9), "p99": _q(values, 0.99)}


async def _measure_client(args: argparse.Namespace) -> dict[str, Any]:
    """The client process: ``--client SERVICE TRITON EXPERT CTYPE C,H,W [--logged-service URL]``."""
    service_url, triton_url, expert, ctype, shape_text = args.client
    shape = tuple(int(x) for x in shape_text.split(","))
    adapter = TritonAdapter(triton_url)
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    board = f"overhead-{uuid.uuid4().hex[:12]}"  # a new board per run: nothing is answered from a log
    ids = iter(range(10**9))
    series: dict[str, list[float]] = {"direct": [], "service": [], "logged": [], "proxy": []}
    clients = [InspectionClient(service_url, timeout=30)]
    if args.logged_service:
        clients.append(InspectionClient(args.logged_service, timeout=30))
    for c in clients:
        await c.wait_until_serving(30)
    # the floor proxy (--floor) has no health service: its warm-up calls show it answers
    proxy = InspectionClient(args.proxy, timeout=30) if args.proxy else None

    #: component id -> (start, end) of the service call, in perf_counter_ns (--trace)
    marks: dict[str, tuple[int, int]] = {}
    direct_ns: list[int] = []

    async def call(client: InspectionClient) -> None:
        component = f"c{next(ids)}"
        began = time.perf_counter_ns()
        await client.inspect(InspectRequest(board, component, ctype, image))
        if client is clients[0]:
            marks[component] = (began, time.perf_counter_ns())

    for _ in range(20):  # warm every path (and make sure the expert is loaded)
        for c in clients:
            await call(c)
        if proxy is not None:
            await call(proxy)
        await adapter.infer(expert, {"image": image[None]})
    #: --trace: Triton's own figures per block, by series (``TritonSide``)
    triton = TritonSide(adapter, expert) if args.trace else None
    meter = CpuMeter(os.getppid(), args.triton_pid) if args.triton_pid else None
    while len(series["direct"]) < args.calls:
        if triton is not None:
            await triton.begin()
        if meter is not None:
            meter.begin()
        for _ in range(args.block):
            began = time.perf_counter_ns()
            await adapter.infer(expert, {"image": image[None]})
            took = time.perf_counter_ns() - began
            series["direct"].append(took / 1e9)
            direct_ns.append(took)
        if meter is not None:
            meter.end("direct", args.block)
        if triton is not None:
            await triton.end("direct")
        for name, c in zip(("service", "logged"), clients, strict=False):
            # the logged service has its own embedded server: only the plain one's shares ours
            side = triton if name == "service" else None
            if side is not None:
                await side.begin()
            metered = meter if name == "service" else None
            if metered is not None:
                metered.begin()
            for _ in range(args.block):
                t = time.perf_counter()
                await call(c)
                series[name].append(time.perf_counter() - t)
            if metered is not None:
                metered.end(name, args.block)
            if side is not None:
                await side.end(name)
        if proxy is not None:
            for _ in range(args.block):
                t = time.perf_counter()
                await call(proxy)
                series["proxy"].append(time.perf_counter() - t)
    for c in clients:
        await c.close()
    if proxy is not None:
        await proxy.close()
    await adapter.close()
    direct, served, logged = series["direct"], series["service"], series["logged"]
    result: dict[str, Any] = {
        "expert": expert, "component_type": ctype, "calls": len(direct),
        "direct_s": _quantiles(direct), "service_s": _quantiles(served),
        "added_p50_s": statistics.median(served) - statistics.median(direct),
    }
    if logged:
        result["logged_service_s"] = _quantiles(logged)
        result["verdict_log_added_p50_s"] = statistics.median(logged) - statistics.median(served)
    if series["proxy"]:
        result["proxy_s"] = _quantiles(series["proxy"])
        result["proxy_added_p50_s"] = statistics.median(series["proxy"]) - statistics.median(direct)
    if meter is not None:
        result["cpu_us_per_call"] = meter.per_call_us()
    if args.trace:
        result["client_marks_ns"] = marks
        result["direct_infer_ns"] = direct_ns
        assert triton is not None
        result["triton_side_us"] = triton.medians()
    return result


def _ticks(stat_path: str) -> int:
    """utime + stime (clock ticks) from a /proc stat file; 0 once the process or thread is gone."""
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


class CpuMeter:
    """``--cpu``: the CPU time each process spends per call, by series, from /proc (clock ticks,
    summed over every block of the series, so the 10 ms tick is fine over hundreds of calls).

    Groups: this client process; the service process, split into its main thread (the event loop:
    the front end's Python, the engine, the adapter) and its other threads (gRPC's C threads,
    the memory sampler); the service's tritonserver; its model processes. On a 2-core box the sum
    over the groups against the wall time of a call says how saturated the box is while it runs:
    where it is about the wall time, every microsecond of CPU anyone adds is on the critical path."""

    def __init__(self, service_pid: int, triton_pid: int) -> None:
        self.groups: dict[str, list[str]] = {
            "client": [f"/proc/{os.getpid()}/stat"],
            "service main thread": [f"/proc/{service_pid}/task/{service_pid}/stat"],
            "service other threads": [
                f"/proc/{service_pid}/task/{t}/stat" for t in os.listdir(f"/proc/{service_pid}/task") if int(t) != service_pid
            ],
            "tritonserver": [f"/proc/{triton_pid}/stat"],
            "model processes": [f"/proc/{p}/stat" for p in processes.children(triton_pid)],
        }
        self.ticks: dict[str, dict[str, int]] = {}
        self.calls: dict[str, int] = {}
        self._before: dict[str, int] = {}

    def _read(self) -> dict[str, int]:
        return {g: sum(_ticks(p) for p in paths) for g, paths in self.groups.items()}

    def begin(self) -> None:
        self._before = self._read()

    def end(self, series: str, calls: int) -> None:
        after = self._read()
        per = self.ticks.setdefault(series, dict.fromkeys(self.groups, 0))
        for g, n in after.items():
            per[g] += n - self._before[g]
        self.calls[series] = self.calls.get(series, 0) + calls

    def per_call_us(self) -> dict[str, dict[str, float]]:
        tick = os.sysconf("SC_CLK_TCK")
        return {series: {g: round(n / tick / self.calls[series] * 1e6) for g, n in per.items()}
                for series, per in self.ticks.items()}


#: Triton's per-request durations (its inference statistics), in the order a request goes
TRITON_STAGES = ("queue", "compute_input", "compute_infer", "compute_output", "success")


class TritonSide:
    """``--trace``: what Triton itself reports for the calls of each block (its inference
    statistics for the expert, read before and after the block, outside the timed calls): the
    mean microseconds per request of each of ``TRITON_STAGES`` (``success``: the whole request
    inside the server), for the direct and the plain service's blocks (the logged service runs
    on a server of its own); ``medians`` over the blocks. It tells a slower infer inside
    the service that Triton itself took longer (CPU shared with the service on a small box) from
    one that only arrived later."""

    def __init__(self, adapter: TritonAdapter, expert: str) -> None:
        self.adapter, self.expert = adapter, expert
        self._before: dict[str, tuple[int, int]] = {}
        self.blocks: dict[str, dict[str, list[float]]] = {}

    async def _read(self) -> dict[str, tuple[int, int]]:
        stats = (await self.adapter.statistics(self.expert))["model_stats"]
        inference = next(s for s in stats if s["name"] == self.expert)["inference_stats"]
        return {k: (int(inference[k].get("count", 0)), int(inference[k].get("ns", 0))) for k in TRITON_STAGES}

    async def begin(self) -> None:
        self._before = await self._read()

    async def end(self, series: str) -> None:
        after = await self._read()
        per = self.blocks.setdefault(series, {})
        for k, (count, ns) in after.items():
            n = count - self._before[k][0]
            if n > 0:
                per.setdefault(k, []).append((ns - self._before[k][1]) / n / 1e3)

    def medians(self) -> dict[str, dict[str, float]]:
        return {series: {k: round(statistics.median(v), 1) for k, v in per.items()}
                for series, per in self.blocks.items()}


class FloorProxy(pb_grpc.InspectionServicer):
    """``--floor``: the least a Python gRPC front end can do for ``Inspect`` with a raw tensor:
    view the tensor's bytes, one infer of ``expert`` on Triton through a ``TritonAdapter`` (the
    service's own client to Triton), the argmax as the verdict. Nothing is checked, queued or
    accounted: it is a measuring stick, not a service (the module doc)."""

    def __init__(self, adapter: TritonAdapter, expert: str) -> None:
        self.adapter, self.expert = adapter, expert

    async def Inspect(self, request: pb.InspectRequest, context: grpc.aio.ServicerContext) -> pb.Verdict:
        t = request.tensor
        image = np.frombuffer(t.data, dtype=np.float32).reshape(tuple(t.shape))
        outputs = await self.adapter.infer(self.expert, {experts_io.INPUT_NAME: image[None]})
        logits = outputs[experts_io.CLASSIFIER_OUTPUT][0]
        return pb.Verdict(
            board_id=request.board_id, component_id=request.component_id, component_type=request.component_type,
            outcome=pb.OUTCOME_PASS, scores=[float(x) for x in logits],
            experts=[pb.ExpertUse(expert=self.expert, version="1")],
        )


async def _start_floor_proxy(triton_url: str, expert: str) -> tuple[grpc.aio.Server, TritonAdapter, str]:
    adapter = TritonAdapter(triton_url)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_InspectionServicer_to_server(FloorProxy(adapter, expert), server)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    await server.start()
    return server, adapter, address


class Tracer:
    """``--trace``: marks (perf_counter_ns) of each call inside the service, by component id:
    ``Engine.inspect`` entered and returned, the adapter's ``infer`` called and returned. Installed
    as instance attributes on one engine and its adapters (``install``), which the front end and
    the backend call as before; calls are sequential, so an infer belongs to the call entered last."""

    def __init__(self) -> None:
        self.marks: dict[str, dict[str, int]] = {}
        self._current: dict[str, int] | None = None

    def install(self, engine: Engine, embedded: Mapping[str, EmbeddedTriton]) -> None:
        inspect = engine.inspect

        async def traced_inspect(request: InspectRequest) -> Verdict:
            mark = self.marks[request.component_id] = {"inspect": time.perf_counter_ns()}
            self._current = mark
            try:
                return await inspect(request)
            finally:
                mark["inspected"] = time.perf_counter_ns()

        engine.inspect = traced_inspect  # type: ignore[method-assign]
        for target in engine.backend.targets.values():  # type: ignore[attr-defined]
            target.adapter.infer = self._traced_infer(target.adapter.infer)

    def _traced_infer(self, infer: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def traced(*a: Any, **k: Any) -> Any:
            mark = self._current
            began = time.perf_counter_ns()
            try:
                return await infer(*a, **k)
            finally:
                if mark is not None:
                    mark["infer"], mark["inferred"] = began, time.perf_counter_ns()

        return traced


#: the trace's stages: (name, from mark, to mark); "start"/"end" are the client's
STAGES = (
    ("in: client -> gRPC -> front end -> Engine.inspect", "start", "inspect"),
    ("engine before the Triton infer", "inspect", "infer"),
    ("Triton infer inside the service", "infer", "inferred"),
    ("engine after the Triton infer", "inferred", "inspected"),
    ("out: Engine.inspect -> front end -> gRPC -> client", "inspected", "end"),
)


def trace_breakdown(client: Mapping[str, Sequence[int]], server: Mapping[str, Mapping[str, int]],
                    direct_ns: Sequence[int], skip: int = 20) -> dict[str, Any]:
    """Median microseconds of each stage over the calls both sides marked (the first ``skip``,
    warm-ups, left out), the median total, and the direct infer's median for comparison."""
    rows = []
    for component, (start, end) in client.items():
        mark = server.get(component)
        if mark is not None and {"infer", "inferred", "inspected"} <= set(mark):
            rows.append({"start": start, "end": end, **mark})
    rows = rows[skip:]
    if not rows:
        return {}

    def median_us(a: str, b: str) -> float:
        return statistics.median((r[b] - r[a]) / 1e3 for r in rows)

    return {
        "calls": len(rows),
        "stages_us": {name: round(median_us(a, b), 1) for name, a, b in STAGES},
        "total_us": round(median_us("start", "end"), 1),
        "direct_infer_us": round(statistics.median(direct_ns) / 1e3, 1),
    }


async def _measure(service: Service, logged: Service | None, args: argparse.Namespace) -> dict[str, Any]:
    coe = service.coe
    ctype = next(t for t, r in sorted(coe.routing.items()) if r.detector is None)
    expert = coe.routing[ctype].classifier
    triton = next(iter(service.embedded.values()))
    shape = ",".join(str(x) for x in coe.experts[expert].input_shape)
    floor = await _start_floor_proxy(triton.grpc_url, expert) if args.floor else None
    try:
        return await _run_client(service, logged, args, triton, expert, ctype, shape,
                                 floor[2] if floor is not None else None)
    finally:
        if floor is not None:
            await floor[0].stop(None)
            await floor[1].close()


async def _run_client(service: Service, logged: Service | None, args: argparse.Namespace, triton: EmbeddedTriton,
                      expert: str, ctype: str, shape: str, proxy: str | None) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--calls", str(args.calls), "--block", str(args.block),
        *(("--trace",) if args.trace else ()),
        *(("--triton-pid", str(triton.process.pid)) if args.cpu and triton.process is not None else ()),
        "--client", service.address, triton.grpc_url, expert, ctype, shape,
        *(("--logged-service", logged.address) if logged is not None else ()),
        *(("--proxy", proxy) if proxy is not None else ()),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the client process failed (exit {proc.returncode})")
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default="model_repository")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--out", default="benchmarks/results/serve_overhead.json")
    ap.add_argument("--verdict-log", choices=("both", "off"), default="both",
                    help="both: also measure a service with a verdict log beside it (default); off: without only")
    ap.add_argument("--sync", choices=("normal", "full"), default="normal", help="the log's verdict_log.sync")
    ap.add_argument("--log-dir", default=None, help="directory for the log's temporary file (default: the system's)")
    ap.add_argument("--trace", action="store_true",
                    help="also split each call through the service into stages (a diagnostic; module doc)")
    ap.add_argument("--service-loop", choices=aio.LOOPS, default=None,
                    help="the service side's event loop (default: what coserve serve runs on, orchestrator.aio)")
    ap.add_argument("--cpu", action="store_true",
                    help="also report the CPU each process spends per call, by series (module doc)")
    ap.add_argument("--floor", action="store_true",
                    help="also measure a minimal Python gRPC proxy in front of the same server (module doc)")
    ap.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--proxy", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--triton-pid", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--logged-service", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(_measure_client(args))))
        return 0
    repo = Path(args.repo)
    coe_path = repo / "demo-coe.yaml"
    profile_path = repo / "profile.yaml"
    if not coe_path.is_file() or not profile_path.is_file():
        raise SystemExit(f"run `coserve demo --repo {repo}` first (it exports the board and caches a profile)")
    coe = load_coe(coe_path)
    profile = yaml.safe_load(profile_path.read_text())
    total = sum(int(c["weight_bytes"]) for per in profile["architectures"].values() for c in per.values())
    budget = 4 * total * len(coe.experts)  # everything resident: no switch in the measurement
    def spec_for(log: VerdictLogConfig | None) -> ServeFile:
        return ServeFile("serve_overhead", ServeConfig((ExecutorConfig("cpu0", "cpu", budget),)), coe_path, repo,
                         profile_path, f"127.0.0.1:{free_port()}", 10_000, {"local": ServerSpec("local")},
                         {"cpu0": "local"}, {}, verdict_log=log)

    result: dict[str, Any] = {}
    tracer = Tracer() if args.trace else None
    log_dir = tempfile.TemporaryDirectory(dir=args.log_dir, prefix="serve_overhead_log_")

    async def run() -> None:
        stop = asyncio.Event()
        ready: dict[str, Service] = {}
        wanted = {"plain", "logged"} if args.verdict_log == "both" else {"plain"}

        async def on_ready(name: str, service: Service) -> None:
            ready[name] = service
            if set(ready) != wanted:
                await stop.wait()  # the other one measures
                return
            try:
                result.update(await _measure(ready["plain"], ready.get("logged"), args))
            finally:
                stop.set()

        runs = [run_service(spec_for(None), stop, on_ready=lambda s: on_ready("plain", s),
                            on_engine=tracer.install if tracer is not None else None)]
        if args.verdict_log == "both":
            log = VerdictLogConfig(Path(log_dir.name) / "verdicts.sqlite", sync=args.sync)
            runs.append(run_service(spec_for(log), stop, on_ready=lambda s: on_ready("logged", s)))
        await asyncio.gather(*runs)

    load_before = os.getloadavg()[0]
    try:
        aio.run(run(), loop=args.service_loop)
    finally:
        log_dir.cleanup()
    result["service_loop"] = aio.loop_name(args.service_loop)
    result["machine"] = machine_description()
    # the 1-minute load average before and after: on a box shared with other work (a figure
    # taken beside other runs is not a quiet-box figure), say how loaded it was
    result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if tracer is not None:
        result["trace"] = trace_breakdown(result.pop("client_marks_ns"), tracer.marks, result.pop("direct_infer_ns"))
        result["trace"]["triton_side_us"] = result.pop("triton_side_us")
    d, s = result["direct_s"], result["service_s"]
    print(f"{result['calls']} sequential calls, batch 1, raw tensor, expert {result['expert']} loaded"
          f" (load average {result['load_avg_1m'][0]:.1f} before, {result['load_avg_1m'][1]:.1f} after)")
    print(f"  (the service on {result['service_loop']}'s event loop"
          f"{'' if args.service_loop is None else ', chosen by --service-loop'})")
    print(f"  direct Triton infer   p50 {d['p50'] * 1e3:6.3f} ms  p90 {d['p90'] * 1e3:6.3f}  p99 {d['p99'] * 1e3:6.3f}")
    print(f"  through the service   p50 {s['p50'] * 1e3:6.3f} ms  p90 {s['p90'] * 1e3:6.3f}  p99 {s['p99'] * 1e3:6.3f}")
    added = result["added_p50_s"] * 1e3
    print(f"  added at p50: {added:.3f} ms  ({'ok' if added < 1.0 else 'OVER'} the 1 ms acceptance)")
    if "proxy_s" in result:
        x = result["proxy_s"]
        print(f"  minimal gRPC proxy    p50 {x['p50'] * 1e3:6.3f} ms  p90 {x['p90'] * 1e3:6.3f}  p99 {x['p99'] * 1e3:6.3f}")
        print(f"  the bare hop adds at p50: {result['proxy_added_p50_s'] * 1e3:.3f} ms"
              "  (the floor of a Python gRPC front end here)")
    if "logged_service_s" in result:
        g = result["logged_service_s"]
        result["verdict_log_sync"] = args.sync
        print(f"  with a verdict log    p50 {g['p50'] * 1e3:6.3f} ms  p90 {g['p90'] * 1e3:6.3f}  p99 {g['p99'] * 1e3:6.3f}"
              f"  (sync {args.sync})")
        log_added = result["verdict_log_added_p50_s"] * 1e3
        print(f"  the log adds at p50: {log_added:.3f} ms  "
              f"({'ok' if log_added < 0.5 else 'OVER'} the 0.5 ms acceptance)")
    if "cpu_us_per_call" in result:
        cpu = result["cpu_us_per_call"]
        groups = list(next(iter(cpu.values())))
        print("  CPU per call (us; summed over the blocks of each series):")
        print("    " + " " * 10 + "".join(f"{g:>23s}" for g in [*groups, "all"]))
        for series, per in cpu.items():
            wall = result[f"{series}_s"]["p50"] * 1e6
            print(f"    {series:10s}" + "".join(f"{per[g]:23.0f}" for g in groups)
                  + f"{sum(per.values()):23.0f}  (p50 wall {wall:.0f})")
    if result.get("trace"):
        tr = result["trace"]
        print(f"  trace (median us over {tr['calls']} calls; marks add a few us each):")
        for name, us in tr["stages_us"].items():
            print(f"    {name:52s} {us:8.1f}")
        print(f"    {'total through the service':52s} {tr['total_us']:8.1f}")
        print(f"    {'direct Triton infer (the client, same marks)':52s} {tr['direct_infer_us']:8.1f}")
        side = tr.get("triton_side_us", {})
        if side:
            print("  inside Triton (its statistics; median over blocks of the mean us per request):")
            print(f"    {'':12s}" + "".join(f"{k:>16s}" for k in TRITON_STAGES))
            for series, per in side.items():
                print(f"    {series:12s}" + "".join(f"{per.get(k, float('nan')):16.1f}" for k in TRITON_STAGES))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    from orchestrator.cli import run_script  # SIGTERM stops the servers it started, like Ctrl-C

    raise SystemExit(run_script(main))
