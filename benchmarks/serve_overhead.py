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

Run:  .venv/bin/python benchmarks/serve_overhead.py [--repo model_repository] [--calls 1000]
Writes benchmarks/results/serve_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
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
from profiler.run import machine_description


def _q(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q))


async def _measure_client(args: argparse.Namespace) -> dict[str, Any]:
    """The client process: ``--client SERVICE TRITON EXPERT CTYPE C,H,W``."""
    service_url, triton_url, expert, ctype, shape_text = args.client
    shape = tuple(int(x) for x in shape_text.split(","))
    adapter = TritonAdapter(triton_url)
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    direct: list[float] = []
    served: list[float] = []
    async with InspectionClient(service_url, timeout=30) as client:
        await client.wait_until_serving(30)
        request = InspectRequest("overhead", "c", ctype, image)
        for _ in range(20):  # warm both paths (and make sure the expert is loaded)
            await client.inspect(request)
            await adapter.infer(expert, {"image": image[None]})
        while len(direct) < args.calls:
            for _ in range(args.block):
                t = time.perf_counter()
                await adapter.infer(expert, {"image": image[None]})
                direct.append(time.perf_counter() - t)
            for _ in range(args.block):
                t = time.perf_counter()
                await client.inspect(request)
                served.append(time.perf_counter() - t)
    await adapter.close()
    return {
        "expert": expert, "component_type": ctype, "calls": len(direct),
        "direct_s": {"p50": _q(direct, 0.5), "p90": _q(direct, 0.9), "p99": _q(direct, 0.99)},
        "service_s": {"p50": _q(served, 0.5), "p90": _q(served, 0.9), "p99": _q(served, 0.99)},
        "added_p50_s": statistics.median(served) - statistics.median(direct),
    }


async def _measure(service: Service, args: argparse.Namespace) -> dict[str, Any]:
    coe = service.coe
    ctype = next(t for t, r in sorted(coe.routing.items()) if r.detector is None)
    expert = coe.routing[ctype].classifier
    triton = next(iter(service.embedded.values()))
    shape = ",".join(str(x) for x in coe.experts[expert].input_shape)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--calls", str(args.calls), "--block", str(args.block),
        "--client", service.address, triton.grpc_url, expert, ctype, shape,
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
    ap.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
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
    spec = ServeFile("serve_overhead", ServeConfig((ExecutorConfig("cpu0", "cpu", budget),)), coe_path, repo,
                     profile_path, f"127.0.0.1:{free_port()}", 10_000, {"local": ServerSpec("local")},
                     {"cpu0": "local"}, {})
    result: dict[str, Any] = {}

    async def run() -> None:
        stop = asyncio.Event()

        async def on_ready(service: Service) -> None:
            try:
                result.update(await _measure(service, args))
            finally:
                stop.set()

        await run_service(spec, stop, on_ready=on_ready)

    asyncio.run(run())
    result["machine"] = machine_description()
    d, s = result["direct_s"], result["service_s"]
    print(f"{result['calls']} sequential calls, batch 1, raw tensor, expert {result['expert']} loaded")
    print(f"  direct Triton infer   p50 {d['p50'] * 1e3:6.3f} ms  p90 {d['p90'] * 1e3:6.3f}  p99 {d['p99'] * 1e3:6.3f}")
    print(f"  through the service   p50 {s['p50'] * 1e3:6.3f} ms  p90 {s['p90'] * 1e3:6.3f}  p99 {s['p99'] * 1e3:6.3f}")
    added = result["added_p50_s"] * 1e3
    print(f"  added at p50: {added:.3f} ms  ({'ok' if added < 1.0 else 'OVER'} the 1 ms acceptance)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    from orchestrator.cli import run_script  # SIGTERM stops the servers it started, like Ctrl-C

    raise SystemExit(run_script(main))
