"""Benchmark: fast release over many load/unload cycles on the embedded tritonserver.

Loads, runs and unloads two small experts in turn ``--cycles`` times (default 500) on one server
with fast release (the default) and reports how long each unloaded expert's memory took to come
back (unload call until the index and the process say it is gone), errors, leftover model
processes and /dev/shm regions, and whether the server is still up. A short stock run (fast
release off) is measured beside it for comparison.

Run:  .venv/bin/python benchmarks/fast_release_cycles.py [--cycles 500] [--out benchmarks/results/fast_release_cycles.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton
from orchestrator.triton.model_config import ModelConfig
from profiler.run import machine_description
from tests.integration import factories


async def _cycles(server: EmbeddedTriton, repo: Path, n: int) -> dict[str, Any]:
    adapter = TritonAdapter(server.grpc_url, process_probe=server.process_probe(), poll_interval_s=0.002)
    gone: list[float] = []
    errors: list[str] = []
    began = time.perf_counter()
    try:
        for i in range(n):
            name = f"fr_{i % 2}"
            try:
                await adapter.load(name, ModelConfig.read(repo / name))
                await adapter.infer(name, {factories.INPUT: np.zeros((2, *factories.IMAGE_SHAPE), np.float32)})
                gone.append((await adapter.unload(name)).gone_seconds)
            except Exception as exc:  # counted, the run goes on
                errors.append(f"cycle {i}: {exc}")
    finally:
        await adapter.close()
    q = np.quantile(np.asarray(gone), [0.5, 0.9, 0.99]) if gone else [0.0, 0.0, 0.0]
    return {
        "cycles": n, "errors": errors[:10], "error_count": len(errors), "seconds": time.perf_counter() - began,
        "release_s": {"median": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": max(gone, default=0.0),
                      "mean": statistics.fmean(gone) if gone else 0.0},
        "server_running": server.running(),
        "model_processes_left": len(server.model_processes()),
        "shm_regions_left": len(server.shm_regions()),
        "unload_mode": server.unload_mode,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=500)
    ap.add_argument("--stock-cycles", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/fast_release_cycles.json")
    args = ap.parse_args()
    result: dict[str, Any] = {"machine": machine_description()}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        for i in range(2):
            factories.write_model(repo, f"fr_{i}", factories.make_classifier_onnx(seed=i))
        for label, fast, n in (("fast-release", True, args.cycles), ("stock", False, args.stock_cycles)):
            with EmbeddedTriton(repo, fast_release=fast) as server:
                result[label] = asyncio.run(_cycles(server, repo, n))
            r = result[label]
            rel = r["release_s"]
            print(f"{label:<13} {r['cycles']} cycles in {r['seconds']:.0f} s: release median {rel['median'] * 1e3:.1f} ms, "
                  f"p99 {rel['p99'] * 1e3:.1f} ms, max {rel['max'] * 1e3:.1f} ms; errors {r['error_count']}, "
                  f"processes left {r['model_processes_left']}, shm regions left {r['shm_regions_left']}, "
                  f"server up {r['server_running']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    from orchestrator.cli import run_script  # SIGTERM stops the servers it started, like Ctrl-C

    raise SystemExit(run_script(main))
