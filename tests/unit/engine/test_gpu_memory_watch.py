"""An external GPU executor's accounting corrected by Triton's GPU metrics
(``orchestrator.triton.gpu_metrics``, ``orchestrator.engine.gpu_memory_watch``,
``serve.attach_gpu_memory_watches``): parsing Triton's exposition, the growth over the baseline,
how stale a figure may be, and the whole path from a metrics endpoint to the core's budget."""

from __future__ import annotations

import asyncio
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.core.serve_config import ExecutorConfig, ServeConfig
from orchestrator.engine.gpu_memory_watch import GpuMemoryWatch
from orchestrator.errors import ConfigError
from orchestrator.serve import attach_gpu_memory_watches, attach_memory_sampler, embedded_gpu_read
from orchestrator.serve_file import parse_serve_file
from orchestrator.triton.gpu_metrics import GpuMetricsError, parse_gpu_memory_used, read_gpu_memory_used
from profiler.memory import NoGpuError
from tests.unit.core.factories import MB
from tests.unit.engine.test_engine import make_engine, request
from tests.unit.engine.virtual_time import run_virtual

#: what Triton 2.x sends on its metrics port (the shape of its exposition; figures made up)
TRITON_METRICS = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="cls_t000",version="1"} 12
# HELP nv_gpu_memory_total_bytes GPU total memory, in bytes
# TYPE nv_gpu_memory_total_bytes gauge
nv_gpu_memory_total_bytes{gpu_uuid="GPU-0aa"} 150754820096
nv_gpu_memory_total_bytes{gpu_uuid="GPU-1bb"} 150754820096
# HELP nv_gpu_memory_used_bytes GPU used memory, in bytes
# TYPE nv_gpu_memory_used_bytes gauge
nv_gpu_memory_used_bytes{gpu_uuid="GPU-0aa"} 1.2582912e+09
nv_gpu_memory_used_bytes{gpu_uuid="GPU-1bb"} 524288
"""


def _metrics(used: Mapping[str, int]) -> str:
    lines = ["# HELP nv_gpu_memory_used_bytes GPU used memory, in bytes", "# TYPE nv_gpu_memory_used_bytes gauge"]
    lines += [f'nv_gpu_memory_used_bytes{{gpu_uuid="{g}"}} {b}' for g, b in used.items()]
    return "\n".join(lines) + "\n"


def test_triton_exposition_gives_each_devices_memory_in_use() -> None:
    # mutation: reading nv_gpu_memory_total_bytes, or keeping only the last device
    assert parse_gpu_memory_used(TRITON_METRICS) == {"GPU-0aa": 1_258_291_200, "GPU-1bb": 524_288}


def test_a_server_without_gpus_has_no_figure_and_garbage_is_an_error() -> None:
    assert parse_gpu_memory_used("# TYPE nv_inference_count counter\nnv_inference_count 3\n") == {}
    with pytest.raises(GpuMetricsError, match="not Prometheus text"):
        parse_gpu_memory_used("<html>not metrics {</html>\n")


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, float | None]] = []
        self.is_serving = True

    def serving(self) -> bool:
        return self.is_serving

    def observe_footprint(
        self, executor: str, measured_bytes: int, reserved_bytes: int = 0, began_at: float | None = None
    ) -> None:
        self.calls.append((executor, measured_bytes, reserved_bytes, began_at))


class _Reads:
    """A scripted ``read``: each call returns the next figure, or raises it."""

    def __init__(self, *figures: Mapping[str, int] | Exception) -> None:
        self.figures = list(figures)

    def __call__(self) -> Mapping[str, int]:
        figure = self.figures.pop(0)
        if isinstance(figure, Exception):
            raise figure
        return figure


def test_the_growth_over_the_baseline_goes_to_the_engine_as_old_as_triton_may_have_read_it() -> None:
    sink = _Recorder()
    reads = _Reads(
        {"GPU-a": 500 * MB, "GPU-b": 100 * MB},  # the baseline: another tenant's 500 MB is not ours
        {"GPU-a": 530 * MB, "GPU-b": 90 * MB, "GPU-new": 7 * MB},  # b shrank: no credit for it
        GpuMetricsError("cannot read Triton's metrics at http://x: refused"),
        {"GPU-a": 540 * MB, "GPU-b": 100 * MB},
    )
    watch = GpuMemoryWatch(sink, "gpu0", "box", reads, staleness_s=2.0, clock=lambda: 100.0)

    async def drive() -> list[int | None]:
        await watch.start()
        got = [await watch.step(), await watch.step()]
        notes = watch.notes()
        sink.is_serving = False  # placing, draining or restarting: read but not handed on
        got.append(await watch.step())
        await watch.stop()
        assert any("last read of Triton's nv_gpu_memory_used_bytes failed" in n for n in notes), notes
        return got

    got = asyncio.run(drive())
    # 30 MB on a, a device the baseline lacked counts whole (7 MB), a shrink counts 0 and lowers
    # b's baseline to 90 MB, so b's return to 100 MB counts 10; mutations: growth against 0 (the
    # tenant's 500 MB counted), or the shrink netted off
    assert got == [37 * MB, None, 50 * MB]
    # began_at: the figure may be Triton's 2 s old reading (mutation: the read's own time)
    assert sink.calls == [("gpu0", 37 * MB, 0, 98.0)]
    assert watch.error is None and watch.peak_bytes == 50 * MB
    assert any("50.0 MB now, peak 50.0 MB" in n for n in watch.notes())


def test_without_a_baseline_nothing_is_corrected_and_status_says_so() -> None:
    sink = _Recorder()
    watch = GpuMemoryWatch(sink, "gpu0", "box", _Reads(GpuMetricsError("refused"), {"GPU-a": 1}))

    async def drive() -> int | None:
        await watch.start()
        got = await watch.step()
        await watch.stop()
        return got

    assert asyncio.run(drive()) is None  # mutation: growth against an empty baseline (all of it ours)
    assert sink.calls == []
    assert "cost profile only" in watch.notes()[0] and "refused" in watch.notes()[0]


@pytest.fixture
def metrics_server() -> Iterator[dict[str, Any]]:
    """A local HTTP endpoint serving ``state['text']`` at /metrics (a stand-in for Triton's port)."""
    state: dict[str, Any] = {"text": _metrics({"GPU-a": 300 * MB})}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = state["text"].encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_reading_a_real_http_endpoint_and_an_unreachable_one(metrics_server: dict[str, Any]) -> None:
    assert read_gpu_memory_used(metrics_server["url"]) == {"GPU-a": 300 * MB}
    with pytest.raises(GpuMetricsError, match="cannot read Triton's metrics at http://127.0.0.1:1/metrics"):
        read_gpu_memory_used("http://127.0.0.1:1/metrics", timeout_s=1.0)


def _gpu_spec(metrics_url: str | None) -> Any:
    server: dict[str, Any] = {"name": "box", "url": "127.0.0.1:8001"}
    if metrics_url is not None:
        server["metrics_url"] = metrics_url
    return parse_serve_file(
        {"coe": "coe.yaml", "repo": "repo", "servers": [server],
         "executors": [{"name": "gpu0", "kind": "gpu", "budget_bytes": 60 * MB, "server": "box", "gpus": [0]}]},
        "s.yaml", Path("/cfg"),
    )


def test_an_external_gpu_executor_over_its_budget_by_triton_s_figures_evicts(metrics_server: dict[str, Any]) -> None:
    # the whole path: serve config -> watch -> Engine.observe_footprint -> the core's budget
    spec = _gpu_spec(metrics_server["url"])
    engine, backend = make_engine(ServeConfig((ExecutorConfig("gpu0", "gpu", 60 * MB),)))
    accounting: dict[str, str] = {}
    said: list[str] = []

    async def drive() -> tuple[int, int, list[str], str]:
        # steps by hand (the virtual clock would run the watch's own loop between every await)
        watches = await attach_gpu_memory_watches(engine, spec, accounting, said.append, interval_s=3600)
        assert len(watches) == 1 and watches[0].baseline == {"GPU-a": 300 * MB}
        # fresh figures here (on the virtual clock the whole test falls in a 2 s stale window,
        # whose highest figure includes a batch's activations; that window is the next test's)
        watches[0].staleness_s = 0.0
        await engine.start()
        for i in range(2):
            await engine.inspect(request(f"t{i}", cid=str(i)))
        pool = engine.core.pool("gpu0")
        used = pool.used_bytes
        # the devices grew by what the core accounts plus 12 MB it does not (a CUDA context, say)
        metrics_server["text"] = _metrics({"GPU-a": 300 * MB + used + 12 * MB})
        await watches[0].step()
        excess = pool.unattributed_bytes
        notes = list(engine.status().notes)
        # then 80 MB beyond: over the 60 MB budget, idle experts are evicted
        metrics_server["text"] = _metrics({"GPU-a": 300 * MB + used + 80 * MB})
        await watches[0].step()
        await asyncio.sleep(5)  # the evictions' unloads finish
        for w in watches:
            await w.stop()
        await engine.close()
        return excess, len(pool.resident()), notes, said[0]

    excess, resident, notes, first_said = run_virtual(drive())
    assert excess == 12 * MB  # mutation: the watch not attached, or the baseline not subtracted
    assert resident == 0
    assert any("nv_gpu_memory_used_bytes" in n and "executor gpu0" in n for n in notes), notes
    assert any("12.0 MB measured beyond the cost profile" in n for n in notes), notes
    assert accounting == {"box": "profile+gpu-metrics"}
    assert "nv_gpu_memory_used_bytes at http://127.0.0.1:" in first_said
    assert backend.violations == []


def test_a_figure_from_before_an_unload_is_not_an_excess_after_it(metrics_server: dict[str, Any]) -> None:
    # Triton's figure is up to 2 s old: read just after an unload is confirmed it still holds the
    # expert; compared with what the core accounts now it would read as an excess of that size
    # (mutation: the accounting history not kept, or began_at the read's own time)
    engine, backend = make_engine(ServeConfig((ExecutorConfig("gpu0", "gpu", 60 * MB),)))

    async def drive() -> tuple[int, int, int]:
        watch = (await attach_gpu_memory_watches(engine, _gpu_spec(metrics_server["url"]), {}, interval_s=3600))[0]
        await engine.start()
        for i in range(2):
            await engine.inspect(request(f"t{i}", cid=str(i)))
        pool = engine.core.pool("gpu0")
        before = pool.used_bytes
        metrics_server["text"] = _metrics({"GPU-a": 300 * MB + before})  # exactly what is held
        await watch.step()
        backend.disk_versions["cls_1"] = "2"  # a new version on disk: the held copy is unloaded
        engine.check_versions({"cls_1": "2"})
        await asyncio.sleep(1.5)  # the unload is confirmed; Triton has not read NVML since
        after = pool.used_bytes
        await watch.step()  # the old figure, read after the unload
        excess = pool.unattributed_bytes
        # and the watch does reach the engine: a fresh figure 7 MB over what is held now counts
        # (else the 0 above would hold with the watch doing nothing)
        watch.staleness_s = 0.0
        metrics_server["text"] = _metrics({"GPU-a": 300 * MB + pool.used_bytes + 7 * MB})
        await watch.step()
        fresh = pool.unattributed_bytes
        await watch.stop()
        await engine.close()
        return before, after, excess, fresh

    before, after, excess, fresh = run_virtual(drive())
    assert after < before
    assert excess == 0
    assert fresh == 7 * MB


def test_no_metrics_url_or_a_cpu_executor_gets_no_watch(metrics_server: dict[str, Any]) -> None:
    engine, _ = make_engine(ServeConfig((ExecutorConfig("gpu0", "gpu", 60 * MB),)))
    cpu_engine, _ = make_engine(ServeConfig((ExecutorConfig("gpu0", "cpu", 60 * MB),)))

    async def drive() -> tuple[int, int]:
        a = await attach_gpu_memory_watches(engine, _gpu_spec(None), {})
        b = await attach_gpu_memory_watches(cpu_engine, _gpu_spec(metrics_server["url"]), {})
        return len(a), len(b)

    assert asyncio.run(drive()) == (0, 0)


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"name": "box", "metrics_url": "http://x:8002/metrics"}, "only an external server"),
        ({"name": "box", "url": "127.0.0.1:8001", "metrics_url": "x:8002/metrics"}, "must be http://HOST:PORT"),
        ({"name": "box", "url": "127.0.0.1:8001", "metrics_url": 8002}, "servers[0].metrics_url"),
    ],
)
def test_a_bad_metrics_url_is_an_error_naming_the_field(server: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_serve_file(
            {"coe": "coe.yaml", "repo": "repo", "servers": [server],
             "executors": [{"name": "gpu0", "kind": "gpu", "budget_bytes": 1e8, "server": "box"}]},
            "s.yaml", Path("/cfg"),
        )
    assert "s.yaml" in str(err.value) and "servers[0].metrics_url" in str(err.value)
    assert message in str(err.value)


def test_a_server_that_publishes_no_gpu_figure_leaves_the_profile() -> None:
    # a server started with --allow-gpu-metrics=false sends no nv_gpu_* lines: "0 GPUs, 0 bytes"
    # must not read as measured (mutation: an empty baseline taken as one)
    sink = _Recorder()
    watch = GpuMemoryWatch(sink, "gpu0", "box", _Reads({}, {"GPU-a": 9 * MB}))

    async def drive() -> int | None:
        await watch.start()
        got = await watch.step()
        await watch.stop()
        return got

    assert asyncio.run(drive()) is None and sink.calls == []
    assert "--allow-gpu-metrics=false" in watch.notes()[0]


class _Nvml:
    """A ``GpuMemoryReader`` with set figures by pid."""

    def __init__(self, used: Mapping[int, int] | Exception) -> None:
        self.used = used

    def device_count(self) -> int:
        return 1

    def used_bytes_by_pid(self) -> Mapping[int, int]:
        if isinstance(self.used, Exception):
            raise self.used
        return self.used


def _embedded_gpu_spec() -> Any:
    return parse_serve_file(
        {"coe": "coe.yaml", "repo": "repo", "servers": [{"name": "local"}],
         "executors": [{"name": "gpu0", "kind": "gpu", "budget_bytes": 60 * MB, "server": "local", "gpus": [0]}]},
        "s.yaml", Path("/cfg"),
    )


def test_an_embedded_server_is_measured_by_nvml_over_its_own_processes_only() -> None:
    # the server (this process here) and its child count; another process on the GPU does not
    # (mutations: every pid NVML lists counted, or the children left out)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        triton = SimpleNamespace(pid=os.getpid())
        nvml = _Nvml({os.getpid(): 100 * MB, child.pid: 50 * MB, 999_999_999: 1000 * MB})
        read = embedded_gpu_read(triton, nvml)  # type: ignore[arg-type]
        assert read() == {"server processes": 150 * MB}
        # a restarted server is a new pid: the read follows it (mutation: the pid taken once)
        triton.pid = child.pid
        assert read() == {"server processes": 50 * MB}
        triton.pid = os.getpid()
        nvml.used = RuntimeError("NVML_ERROR_GPU_IS_LOST")
        with pytest.raises(GpuMetricsError, match="NVML: NVML_ERROR_GPU_IS_LOST"):
            read()
    finally:
        child.kill()
        child.wait()


def test_an_embedded_gpu_executor_gets_an_nvml_watch_and_no_host_sampler() -> None:
    spec = _embedded_gpu_spec()
    engine, _ = make_engine(ServeConfig((ExecutorConfig("gpu0", "gpu", 60 * MB),)))
    triton = SimpleNamespace(pid=os.getpid())
    said: list[str] = []

    async def drive() -> tuple[list[GpuMemoryWatch], list[GpuMemoryWatch], Any]:
        sampler = attach_memory_sampler(engine, {"local": triton}, spec)  # type: ignore[dict-item]
        watches = await attach_gpu_memory_watches(
            engine, spec, {}, said.append, embedded={"local": triton},  # type: ignore[dict-item]
            nvml=lambda: _Nvml({os.getpid(): 300 * MB}), interval_s=3600,
        )
        def no_gpu() -> Any:
            raise NoGpuError("--kind gpu: no usable NVIDIA GPU on this machine (NVML: not found)")
        none = await attach_gpu_memory_watches(engine, spec, {}, said.append, embedded={"local": triton},  # type: ignore[dict-item]
                                               nvml=no_gpu)
        for w in watches:
            await w.stop()
        return watches, none, sampler

    watches, none, sampler = asyncio.run(drive())
    # host PSS is not a GPU budget's unit (mutation: the sampler measuring GPU executors too)
    assert sampler is None
    assert len(watches) == 1 and not watches[0].whole_devices and watches[0].baseline == {"server processes": 300 * MB}
    assert "NVML (per process)" in said[0]
    assert none == [] and "accounted from the cost profile only" in said[1] and "no usable NVIDIA GPU" in said[1]


def test_a_step_that_raises_does_not_end_the_watch() -> None:
    # mutation: the loop without its guard (one bad reading and the executor is never measured again)
    class Broken(_Recorder):
        def observe_footprint(self, *a: Any, **k: Any) -> None:
            super().observe_footprint(*a, **k)
            if len(self.calls) == 1:
                raise RuntimeError("boom")

    sink = Broken()
    watch = GpuMemoryWatch(sink, "gpu0", "box", lambda: {"GPU-a": 5 * MB}, interval_s=0.01)

    async def drive() -> None:
        await watch.start()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(sink.calls) >= 3:
                break
        await watch.stop()

    asyncio.run(drive())
    assert len(sink.calls) >= 3


def test_a_port_that_does_not_speak_http_is_a_metrics_error_not_a_crash() -> None:
    # metrics_url given Triton's gRPC port by mistake: http.client's BadStatusLine escaped the
    # reader and ended `coserve serve` with a traceback (mutation: HTTPException not caught)
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer_garbage() -> None:
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00garbage-not-http\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        with pytest.raises(GpuMetricsError, match="cannot read Triton's metrics"):
            read_gpu_memory_used(f"http://127.0.0.1:{listener.getsockname()[1]}/metrics", timeout_s=2.0)
    finally:
        thread.join(5)
        listener.close()
    with pytest.raises(GpuMetricsError, match="not Prometheus text"):
        parse_gpu_memory_used('nv_gpu_memory_used_bytes{gpu_uuid="GPU-a"} +Inf\n')


def test_a_tenant_freeing_memory_lowers_the_baseline() -> None:
    # baseline 500 MB (a tenant's); the tenant frees 300, then we grow 200: without lowering the
    # baseline the growth read 0 (mutation: the baseline never lowered)
    sink = _Recorder()
    watch = GpuMemoryWatch(sink, "gpu0", "box", _Reads({"GPU-a": 500 * MB}, {"GPU-a": 200 * MB},
                                                        {"GPU-a": 400 * MB}), staleness_s=0.0)

    async def drive() -> list[int | None]:
        await watch.start()
        got = [await watch.step(), await watch.step()]
        await watch.stop()
        return got

    assert asyncio.run(drive()) == [0, 200 * MB]


def test_without_nvml_an_embedded_gpu_executor_says_so_in_status() -> None:
    spec = _embedded_gpu_spec()
    engine, _ = make_engine(ServeConfig((ExecutorConfig("gpu0", "gpu", 60 * MB),)))
    accounting: dict[str, str] = {}

    def no_gpu() -> Any:
        raise NoGpuError("--kind gpu: no usable NVIDIA GPU on this machine (NVML: not found)")

    async def drive() -> list[GpuMemoryWatch]:
        return await attach_gpu_memory_watches(engine, spec, accounting, embedded={"local": SimpleNamespace(pid=1)},  # type: ignore[dict-item]
                                               nvml=no_gpu)

    assert asyncio.run(drive()) == []
    notes = list(engine.status().notes)
    # mutation: said at start only (the host sampler no longer measures it, so nothing does)
    assert any("executor gpu0" in n and "cost profile only" in n for n in notes), notes
    assert accounting == {"local": "profile (no NVML)"}
