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

Run:  .venv/bin/python benchmarks/serve_overhead.py [--repo model_repository] [--calls 1000]
      [--verdict-log both|off] [--sync normal|full] [--log-dir DIR]
Writes benchmarks/results/serve_overhead.json (``--out``; the committed ``sync=full`` figure is
``serve_overhead.sync_full.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orchestrator.client import InspectionClient
from orchestrator.coe import load_coe
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.engine.types import InspectRequest
from orchestrator.serve import Service, run_service
from orchestrator.serve_file import ServeFile, ServerSpec
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import free_port
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
    series: dict[str, list[float]] = {"direct": [], "service": [], "logged": []}
    clients = [InspectionClient(service_url, timeout=30)]
    if args.logged_service:
        clients.append(InspectionClient(args.logged_service, timeout=30))
    for c in clients:
        await c.wait_until_serving(30)

    async def call(client: InspectionClient) -> None:
        await client.inspect(InspectRequest(board, f"c{next(ids)}", ctype, image))

    for _ in range(20):  # warm every path (and make sure the expert is loaded)
        for c in clients:
            await call(c)
        await adapter.infer(expert, {"image": image[None]})
    while len(series["direct"]) < args.calls:
        for _ in range(args.block):
            t = time.perf_counter()
            await adapter.infer(expert, {"image": image[None]})
            series["direct"].append(time.perf_counter() - t)
        for name, c in zip(("service", "logged"), clients, strict=False):
            for _ in range(args.block):
                t = time.perf_counter()
                await call(c)
                series[name].append(time.perf_counter() - t)
    for c in clients:
        await c.close()
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
    return result


async def _measure(service: Service, logged: Service | None, args: argparse.Namespace) -> dict[str, Any]:
    coe = service.coe
    ctype = next(t for t, r in sorted(coe.routing.items()) if r.detector is None)
    expert = coe.routing[ctype].classifier
    triton = next(iter(service.embedded.values()))
    shape = ",".join(str(x) for x in coe.experts[expert].input_shape)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--calls", str(args.calls), "--block", str(args.block),
        "--client", service.address, triton.grpc_url, expert, ctype, shape,
        *(("--logged-service", logged.address) if logged is not None else ()),
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
    ap.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
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

        runs = [run_service(spec_for(None), stop, on_ready=lambda s: on_ready("plain", s))]
        if args.verdict_log == "both":
            log = VerdictLogConfig(Path(log_dir.name) / "verdicts.sqlite", sync=args.sync)
            runs.append(run_service(spec_for(log), stop, on_ready=lambda s: on_ready("logged", s)))
        await asyncio.gather(*runs)

    try:
        asyncio.run(run())
    finally:
        log_dir.cleanup()
    result["machine"] = machine_description()
    d, s = result["direct_s"], result["service_s"]
    print(f"{result['calls']} sequential calls, batch 1, raw tensor, expert {result['expert']} loaded")
    print(f"  direct Triton infer   p50 {d['p50'] * 1e3:6.3f} ms  p90 {d['p90'] * 1e3:6.3f}  p99 {d['p99'] * 1e3:6.3f}")
    print(f"  through the service   p50 {s['p50'] * 1e3:6.3f} ms  p90 {s['p90'] * 1e3:6.3f}  p99 {s['p99'] * 1e3:6.3f}")
    added = result["added_p50_s"] * 1e3
    print(f"  added at p50: {added:.3f} ms  ({'ok' if added < 1.0 else 'OVER'} the 1 ms acceptance)")
    if "logged_service_s" in result:
        g = result["logged_service_s"]
        result["verdict_log_sync"] = args.sync
        print(f"  with a verdict log    p50 {g['p50'] * 1e3:6.3f} ms  p90 {g['p90'] * 1e3:6.3f}  p99 {g['p99'] * 1e3:6.3f}"
              f"  (sync {args.sync})")
        log_added = result["verdict_log_added_p50_s"] * 1e3
        print(f"  the log adds at p50: {log_added:.3f} ms  "
              f"({'ok' if log_added < 0.5 else 'OVER'} the 0.5 ms acceptance)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    from orchestrator.cli import run_script  # SIGTERM stops the servers it started, like Ctrl-C

    raise SystemExit(run_script(main))
