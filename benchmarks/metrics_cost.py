"""What the Prometheus metrics cost: per request (``MeteredService``) and per scrape.

    .venv/bin/python benchmarks/metrics_cost.py [--out benchmarks/results/metrics_cost.json]

- per request: ``inspect`` on an in-process service that answers at once, awaited directly and
  through ``MeteredService`` (counters, histograms, in-flight gauge); the difference is what the
  metrics add to each request (batches of 2,000 calls, median of the per-call means);
- per scrape, on the real engine over the profile-timed fake backend (a 100-type CoE, 101
  experts, 4 executors, after 400 requests): ``snapshot`` (what runs on the engine's event loop)
  and ``render`` (snapshot plus the text exposition, process metrics included), medians of 200;
- an HTTP scrape of ``/metrics`` from another thread while the loop is idle (median of 50).

Figures on the shared 2-core box are noisy (other work runs beside them); the JSON says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.core.serve_config import ExecutorConfig, ServeConfig  # noqa: E402
from orchestrator.engine.engine import Engine  # noqa: E402
from orchestrator.engine.fake_backend import FakeBackend  # noqa: E402
from orchestrator.engine.types import InspectRequest, Verdict  # noqa: E402
from orchestrator.metrics import ServiceMetrics  # noqa: E402
from tests.unit.core.factories import MB, make_coe, make_profile  # noqa: E402
from tests.unit.stub_service import StubService  # noqa: E402


class Instant(StubService):
    """An ``InspectionService`` that answers every request at once (no engine cost)."""

    def __init__(self) -> None:
        self.verdict = Verdict("b", "c", "t", "pass", queue_s=0.001, compute_s=0.002)

    async def inspect(self, request: InspectRequest) -> Verdict:
        return self.verdict


class Listening(Instant):
    stats = None
    listeners: list = []  # type: ignore[type-arg]


async def per_request(batches: int, per_batch: int) -> dict[str, float]:
    inner = Listening()
    metered = ServiceMetrics(inner, process_metrics=False).wrap(inner)
    req = InspectRequest("b", "c", "t", b"")
    out: dict[str, list[float]] = {"direct": [], "metered": []}
    for _ in range(batches):
        for name, svc in (("direct", inner), ("metered", metered)):
            t = time.perf_counter()
            for _ in range(per_batch):
                await svc.inspect(req)
            out[name].append((time.perf_counter() - t) / per_batch)
    direct, metered_s = statistics.median(out["direct"]), statistics.median(out["metered"])
    return {"direct_us": direct * 1e6, "metered_us": metered_s * 1e6, "added_us": (metered_s - direct) * 1e6}


async def per_scrape(repeats: int, http_repeats: int) -> dict[str, float]:
    coe, profile = make_coe(types=100, size_mb=5.0), make_profile(disk_s=0.001, k_s=0.0001, b_s=0.0001)
    config = ServeConfig(tuple(ExecutorConfig(f"cpu{i}", "cpu", 60 * MB) for i in range(4)), policy="coserve")
    backend = FakeBackend(coe, profile, {e.name: e.kind for e in config.executors})
    engine = Engine(coe, config, profile, backend)
    metrics = ServiceMetrics(engine)
    service = metrics.wrap(engine)
    await engine.start()
    image = np.full((3, 64, 64), 0.1, dtype=np.float32)
    types = sorted(coe.routing)
    await asyncio.gather(*(service.inspect(InspectRequest("b", str(i), types[i % len(types)], image)) for i in range(400)))
    snap, render = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        metrics.snapshot()
        snap.append(time.perf_counter() - t)
        t = time.perf_counter()
        text = metrics.render()
        render.append(time.perf_counter() - t)
    endpoint = metrics.start("127.0.0.1:0")
    http = []
    try:
        for _ in range(http_repeats):
            t = time.perf_counter()
            await asyncio.to_thread(lambda: urllib.request.urlopen(endpoint.url, timeout=10).read())
            http.append(time.perf_counter() - t)
    finally:
        metrics.stop()
        await engine.close()
    return {
        "experts": len(coe.experts), "executors": len(config.executors), "exposition_bytes": len(text),
        "series": sum(1 for line in text.decode().splitlines() if line and not line.startswith("#")),
        "snapshot_ms": statistics.median(snap) * 1e3, "render_ms": statistics.median(render) * 1e3,
        "http_scrape_ms": statistics.median(http) * 1e3,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "metrics_cost.json"))
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = ap.parse_args()
    reps = (5, 500, 20, 5) if args.quick else (15, 2000, 200, 50)
    req = asyncio.run(per_request(reps[0], reps[1]))
    scrape = asyncio.run(per_scrape(reps[2], reps[3]))
    result = {
        "command": "benchmarks/metrics_cost.py" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()} {platform.python_version()}, shared 2-core box (noisy: other work ran beside it)",
        "per_request": req, "per_scrape": scrape,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"per request: +{req['added_us']:.1f} us ({req['direct_us']:.1f} -> {req['metered_us']:.1f} us per inspect)")
    print(f"per scrape ({scrape['experts']} experts, {scrape['executors']} executors, {scrape['series']} series): "
          f"snapshot on the loop {scrape['snapshot_ms']:.2f} ms, render {scrape['render_ms']:.2f} ms, "
          f"HTTP {scrape['http_scrape_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
