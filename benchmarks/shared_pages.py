"""Benchmark: the host memory of experts loaded together against the profile's accounting.

On the embedded tritonserver every loaded expert is a model process mapping the same libraries
(the Python runtime, numpy, ONNX Runtime). Summed PSS counts each shared page once in all, so
the footprint of ``n`` experts is not ``n`` times one expert's footprint alone. This loads the
board's experts one after another on a fresh server, has each run one batch of each size up to
its max batch size (an expert that has served: the allocator keeps what the larger batches
took), and after each prints what is measured (the model processes' summed PSS and USS, the most
any one process shares, RSS - USS, and the server's PSS growth over idle) beside
two accountings:
- **per expert alone**: each expert's footprint loaded alone on a fresh server and served (its PSS +
  the server's growth: what ``weight_bytes`` stood for before ``shared_bytes`` existed), summed;
- **profile**: ``executor_reserve_bytes()`` (server growth + ``shared_bytes``, once) plus each
  loaded expert's ``weight_bytes`` from ``--profile`` (what it adds beside others).
The budget promise needs measured <= accounted; the tighter, the more experts a budget holds.

Run:  .venv/bin/python benchmarks/shared_pages.py [--repo model_repository]
      [--profile model_repository/profile.yaml] [--experts 10]
      [--out benchmarks/results/shared_pages.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

import numpy as np
from bench_io import write_result  # benchmarks/ is sys.path[0] when run as a script

from orchestrator.coe import load_coe
from orchestrator.config_reader import read_yaml_file
from orchestrator.core.profile import parse_profile
from orchestrator.experts_io import INPUT_NAME
from orchestrator.triton import processes
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton
from orchestrator.triton.model_config import ModelConfig
from profiler.run import machine_description

MB = 1e6


async def _load_and_serve(adapter: TritonAdapter, repo: Path, name: str, shape: tuple[int, ...]) -> None:
    """Load ``name`` and run one batch of each size 1, 2, 4, ... up to its max batch size: the
    state of an expert that has served (the allocator keeps what the larger batches took)."""
    await adapter.load(name)
    largest = max(1, ModelConfig.read(repo / name).max_batch_size)
    n = 1
    while n <= largest:
        await adapter.infer(name, {INPUT_NAME: np.zeros((n, *shape), dtype=np.float32)})
        n *= 2


async def alone_footprint(repo: Path, name: str, shape: tuple[int, ...]) -> int:
    """PSS of ``name``'s processes + the server's growth, loaded alone on a fresh server."""
    server = EmbeddedTriton(repo).start()
    try:
        idle = processes.memory(server.pid or 0).pss_bytes
        async with TritonAdapter(server.grpc_url, process_probe=server.process_probe()) as adapter:
            await _load_and_serve(adapter, repo, name, shape)
            await asyncio.sleep(1.0)
            return sum(p.pss_bytes for p in server.model_processes()) + max(
                0, processes.memory(server.pid or 0).pss_bytes - idle)
    finally:
        server.stop()


async def measure(repo: Path, profile_path: Path, count: int) -> dict[str, Any]:
    coe = load_coe(repo / "demo-coe.yaml")
    profile = parse_profile(read_yaml_file(profile_path), str(profile_path))
    spec = profile.processor("cpu")
    # classifiers and detectors interleaved, as a board would bring them in
    classifiers = sorted({r.classifier for r in coe.routing.values()})
    detectors = sorted({r.detector for r in coe.routing.values() if r.detector is not None})
    order: list[str] = []
    while (classifiers or detectors) and len(order) < count:
        for group in (classifiers, classifiers, detectors):
            if group and len(order) < count:
                order.append(group.pop(0))
    alone: dict[str, int] = {}
    for name in order:
        arch = coe.experts[name].arch
        if arch not in alone:
            alone[arch] = await alone_footprint(repo, name, coe.experts[name].input_shape)
    rows = []
    server = EmbeddedTriton(repo).start()
    try:
        idle = processes.memory(server.pid or 0).pss_bytes
        async with TritonAdapter(server.grpc_url, process_probe=server.process_probe()) as adapter:
            for i, name in enumerate(order, 1):
                await _load_and_serve(adapter, repo, name, coe.experts[name].input_shape)
                await asyncio.sleep(1.0)
                procs = server.model_processes()
                grown = max(0, processes.memory(server.pid or 0).pss_bytes - idle)
                loaded = order[:i]
                weights = [profile.cost(coe.experts[n].arch, "cpu").weight_bytes or 0 for n in loaded]  # type: ignore[union-attr]
                rows.append({
                    "loaded": i, "expert": name,
                    "model_pss_bytes": sum(p.pss_bytes for p in procs),
                    "model_uss_bytes": sum(p.uss_bytes for p in procs),
                    "max_shared_bytes": max(p.rss_bytes - p.uss_bytes for p in procs),
                    "server_growth_bytes": grown,
                    "measured_bytes": sum(p.pss_bytes for p in procs) + grown,
                    "alone_accounting_bytes": sum(alone[coe.experts[n].arch] for n in loaded),
                    "profile_accounting_bytes": spec.executor_reserve_bytes() + sum(weights),
                })
    finally:
        server.stop()
    return {"profile": str(profile_path), "shared_bytes": spec.shared_bytes,
            "server_growth_bytes": spec.server_growth_bytes,
            "alone_footprint_bytes": alone, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default="model_repository")
    ap.add_argument("--profile", default=None, help="default: <repo>/profile.yaml")
    ap.add_argument("--experts", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/shared_pages.json")
    args = ap.parse_args()
    repo = Path(args.repo)
    profile = Path(args.profile) if args.profile else repo / "profile.yaml"
    if not (repo / "demo-coe.yaml").is_file() or not profile.is_file():
        raise SystemExit(f"run `coserve demo --repo {repo}` first (it exports the board and caches a profile)")
    result = asyncio.run(measure(repo, profile, args.experts))
    result["machine"] = machine_description()
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(f"{'n':>3} {'expert':<10} {'PSS':>7} {'USS':>7} {'shared':>7} {'growth':>7} {'measured':>9}"
          f" {'alone sum':>10} {'profile':>8}  (MB)")
    for r in result["rows"]:
        print(f"{r['loaded']:>3} {r['expert']:<10} {r['model_pss_bytes'] / MB:7.1f} {r['model_uss_bytes'] / MB:7.1f}"
              f" {r['max_shared_bytes'] / MB:7.1f} {r['server_growth_bytes'] / MB:7.1f} {r['measured_bytes'] / MB:9.1f}"
              f" {r['alone_accounting_bytes'] / MB:10.1f} {r['profile_accounting_bytes'] / MB:8.1f}")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
