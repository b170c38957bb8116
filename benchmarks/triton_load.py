"""Benchmark: expert switch costs and inference latency through the embedded tritonserver.

For classifier experts of ~1, 10, 50 and 100 MB (fp32 weights) exported by the project's exporter
and hosted by the ``coserve_ort`` Python-based backend, measures over ``--reps`` repetitions:
- load time (the adapter's load call until the model is READY),
- unload-until-gone time (unload call until the index says UNAVAILABLE *and* the model process
  has exited, i.e. its memory is back), and Triton's unload call alone,
- inference round-trip latency at batch 1 and batch 8 (median and p90 of ``--infer-reps``),
- the model process's PSS once loaded.

Run:  .venv/bin/python benchmarks/triton_load.py [--sizes-mb 1,10,50,100] [--out bench-results/triton_load.json]
Writes flat JSON (one object per size) and prints a table. Wall-clock figures depend on the host;
the note that quotes them names the host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from exporter.build import export_coe
from orchestrator.coe import parse_coe
from orchestrator.experts_io import INPUT_NAME
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton
from orchestrator.triton.model_config import ModelConfig


def _coe(sizes_mb: list[float], image: int) -> Any:
    experts = [{"name": f"cls_{int(mb)}mb", "arch": "classifier", "size_mb": mb} for mb in sizes_mb]
    return parse_coe(
        {
            "name": "bench_load",
            "seed": 1,
            "image": {"channels": 3, "height": image, "width": image},
            "experts": experts,
            "routing": [{"component_type": f"t{i}", "classifier": e["name"]} for i, e in enumerate(experts)],
            "board": {"name": "bench", "mix": {f"t{i}": 1 for i in range(len(experts))}},
        },
        source="benchmarks/triton_load.py",
    )


def _q(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q))


async def _measure(server: EmbeddedTriton, repo: Path, name: str, reps: int, infer_reps: int, image: int) -> dict[str, Any]:
    adapter = TritonAdapter(server.grpc_url, process_probe=server.process_probe())
    config = ModelConfig.read(repo / name)
    loads: list[float] = []
    gone: list[float] = []
    calls: list[float] = []
    infer: dict[int, list[float]] = {1: [], 8: []}
    pss = 0
    rng = np.random.default_rng(0)
    try:
        for rep in range(reps):
            loads.append((await adapter.load(name, config)).seconds)
            if rep == 0:
                pss = sum(p.pss_bytes for p in server.model_processes(name))
                for batch in infer:
                    x = rng.random((batch, 3, image, image), dtype=np.float32)
                    await adapter.infer(name, {INPUT_NAME: x})  # warm-up
                    for _ in range(infer_reps):
                        t0 = time.perf_counter()
                        await adapter.infer(name, {INPUT_NAME: x})
                        infer[batch].append(time.perf_counter() - t0)
            result = await adapter.unload(name, timeout_s=60)
            gone.append(result.gone_seconds)
            calls.append(result.call_seconds)
    finally:
        await adapter.close()
    return {
        "expert": name,
        "onnx_bytes": (repo / name / "1" / "model.onnx").stat().st_size,
        "model_pss_bytes": pss,
        "load_s_median": statistics.median(loads),
        "load_s_max": max(loads),
        "unload_call_s_median": statistics.median(calls),
        "unload_until_gone_s_median": statistics.median(gone),
        "unload_until_gone_s_max": max(gone),
        "infer_b1_ms_median": 1e3 * statistics.median(infer[1]),
        "infer_b1_ms_p90": 1e3 * _q(infer[1], 0.9),
        "infer_b8_ms_median": 1e3 * statistics.median(infer[8]),
        "infer_b8_ms_p90": 1e3 * _q(infer[8], 0.9),
        "reps": reps,
        "infer_reps": infer_reps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mb", default="1,10,50,100")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--infer-reps", type=int, default=30)
    ap.add_argument("--image", type=int, default=64)
    ap.add_argument("--repo", help="reuse/keep this model repository (default: a temp dir)")
    ap.add_argument("--out", default="bench-results/triton_load.json")
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes_mb.split(",")]
    coe = _coe(sizes, args.image)
    repo = Path(args.repo) if args.repo else Path(tempfile.mkdtemp(prefix="coserve-bench-"))
    repo.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = export_coe(coe, repo, calibrate=False, jobs=1)
    print(f"exported {len(summary.experts)} experts in {time.perf_counter() - t0:.1f} s into {repo}")
    rows = []
    with EmbeddedTriton(repo) as server:
        for name in coe.experts:
            rows.append(asyncio.run(_measure(server, repo, name, args.reps, args.infer_reps, args.image)))
            r = rows[-1]
            print(
                f"{name:<10} onnx {r['onnx_bytes'] / 1e6:6.1f} MB  PSS {r['model_pss_bytes'] / 2**20:6.1f} MiB  "
                f"load {r['load_s_median'] * 1e3:7.1f} ms (max {r['load_s_max'] * 1e3:7.1f})  "
                f"unload call {r['unload_call_s_median'] * 1e3:5.1f} ms  until gone {r['unload_until_gone_s_median'] * 1e3:7.1f} ms  "
                f"infer b1 {r['infer_b1_ms_median']:6.2f} ms  b8 {r['infer_b8_ms_median']:7.2f} ms"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"host": {"machine": platform.machine(), "python": platform.python_version()}, "image": args.image, "experts": rows}
    out.write_text(json.dumps(doc, indent=2, sort_keys=True))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
