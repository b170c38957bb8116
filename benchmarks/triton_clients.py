"""Benchmark: what one Triton infer costs the calling process, by client library.

A what-if behind docs/serving.md "What the orchestrator adds to one ``Inspect``": the adapter
infers through ``tritonclient.grpc.aio``; would another way of calling Triton cost the service
less CPU (on a 2-core box CPU the service spends is latency, see ``serve_overhead.py --cpu``)?
One embedded tritonserver, one demo classifier loaded, batch 1 of a raw FP32 tensor, and four
clients in this process, in alternating blocks of ``--calls`` sequential infers (``--rounds``):
1. ``TritonAdapter.infer`` (tritonclient.grpc.aio, the adapter's path);
2. a bare ``grpc.aio`` stub of Triton's service with a request built from protobuf directly;
3. ``tritonclient.http.aio`` (aiohttp) with binary tensors;
4. a minimal keep-alive HTTP/1.1 client on asyncio streams speaking the binary tensor extension
   (one connection, no error handling: a lower bound for any HTTP client, not a product).
Each must return the adapter's answer. Reports the median latency and this process's CPU time
per call (the median over the rounds).

Run:  .venv/bin/python benchmarks/triton_clients.py [--repo model_repository] [--calls 300]
      [--rounds 6] [--out benchmarks/results/triton_clients.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import tritonclient.http.aio as httpaio
from bench_io import write_result  # benchmarks/ is sys.path[0] when run as a script
from tritonclient.grpc import service_pb2, service_pb2_grpc

from orchestrator import aio
from orchestrator.coe import load_coe
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton
from profiler.run import machine_description


class MinimalHttp:
    """One keep-alive HTTP/1.1 connection to Triton's infer endpoint (binary tensor extension)."""

    def __init__(self, port: int, model: str, output: str) -> None:
        self.port, self.model, self.output = port, model, output

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def infer(self, array: np.ndarray) -> np.ndarray:
        header = json.dumps({
            "inputs": [{"name": "image", "shape": list(array.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": array.nbytes}}],
            "outputs": [{"name": self.output, "parameters": {"binary_data": True}}],
        }).encode()
        body = header + array.tobytes()
        self.writer.write(
            (f"POST /v2/models/{self.model}/infer HTTP/1.1\r\nHost: triton\r\n"
             f"Inference-Header-Content-Length: {len(header)}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        headers = dict(
            (k.strip().lower(), v.strip()) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:]) if v
        )
        data = await self.reader.readexactly(int(headers[b"content-length"]))
        return np.frombuffer(data[int(headers[b"inference-header-content-length"]):], dtype=np.float32)

    def close(self) -> None:
        self.writer.close()


async def measure(repo: Path, calls: int, rounds: int) -> dict[str, object]:
    coe = load_coe(repo / "demo-coe.yaml")
    model = sorted(rule.classifier for rule in coe.routing.values())[0]
    shape = (1, *coe.experts[model].input_shape)
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    server = EmbeddedTriton(repo).start()
    try:
        adapter = TritonAdapter(server.grpc_url)
        await adapter.load(model)
        output = next(iter(await adapter.infer(model, {"image": image})))
        channel = grpc.aio.insecure_channel(server.grpc_url)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        http = httpaio.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        minimal = MinimalHttp(server.http_port, model, output)
        await minimal.connect()

        async def via_adapter() -> np.ndarray:
            return (await adapter.infer(model, {"image": image}))[output]

        async def via_stub() -> np.ndarray:
            request = service_pb2.ModelInferRequest(model_name=model)
            tensor = request.inputs.add()
            tensor.name, tensor.datatype = "image", "FP32"
            tensor.shape.extend(image.shape)
            request.raw_input_contents.append(image.tobytes())
            answer = await stub.ModelInfer(request)
            return np.frombuffer(answer.raw_output_contents[0], dtype=np.float32)

        async def via_http_aio() -> np.ndarray:
            item = httpaio.InferInput("image", list(image.shape), "FP32")
            item.set_data_from_numpy(image, binary_data=True)
            answer = await http.infer(model, [item], outputs=[httpaio.InferRequestedOutput(output, binary_data=True)])
            return answer.as_numpy(output)

        async def via_minimal() -> np.ndarray:
            return await minimal.infer(image)

        clients: dict[str, Callable[[], Awaitable[np.ndarray]]] = {
            "tritonclient.grpc.aio (the adapter)": via_adapter,
            "grpc.aio stub, protobuf request": via_stub,
            "tritonclient.http.aio": via_http_aio,
            "minimal HTTP/1.1 on asyncio streams": via_minimal,
        }
        reference = (await via_adapter()).ravel()
        for name, call in clients.items():
            for _ in range(20):
                got = await call()
            if not np.allclose(got.ravel(), reference):
                raise SystemExit(f"{name}: another answer than the adapter's")
        latency: dict[str, list[float]] = {n: [] for n in clients}
        cpu: dict[str, list[float]] = {n: [] for n in clients}
        for _ in range(rounds):
            for name, call in clients.items():
                began_cpu = time.process_time()
                for _ in range(calls):
                    began = time.perf_counter()
                    await call()
                    latency[name].append(time.perf_counter() - began)
                cpu[name].append((time.process_time() - began_cpu) / calls)
        minimal.close()
        await http.close()
        await channel.close()
        await adapter.close()
    finally:
        server.stop()
    return {
        "expert": model, "calls_per_round": calls, "rounds": rounds, "event_loop": aio.loop_name(),
        "clients": {n: {"p50_latency_us": round(statistics.median(latency[n]) * 1e6),
                        "client_cpu_us_per_call": round(statistics.median(cpu[n]) * 1e6)} for n in clients},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default="model_repository")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", default="benchmarks/results/triton_clients.json")
    args = ap.parse_args()
    repo = Path(args.repo)
    if not (repo / "demo-coe.yaml").is_file():
        raise SystemExit(f"run `coserve demo --repo {repo}` first (it exports the board)")
    load_before = os.getloadavg()[0]
    result = aio.run(measure(repo, args.calls, args.rounds))
    result["machine"] = machine_description()
    result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    for name, row in result["clients"].items():  # type: ignore[attr-defined]
        print(f"  {name:38s} p50 {row['p50_latency_us']:6d} us   client CPU {row['client_cpu_us_per_call']:5d} us/call")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
