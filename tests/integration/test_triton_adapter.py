"""The Triton adapter against a real embedded tritonserver (no mocks)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from orchestrator.errors import (
    InferenceError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
    ServerUnavailableError,
)
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import free_port
from orchestrator.triton.model_config import ModelConfig, TensorSpec
from tests.integration import factories

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("unload_all"), pytest.mark.timeout(120)]


def reference(repo: Path, name: str, batch: np.ndarray) -> np.ndarray:
    """onnxruntime run directly on the same model.onnx the server loads."""
    session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run([factories.OUTPUT], {factories.INPUT: batch})[0]


@pytest.mark.parametrize("batch", [1, 8])
def test_load_and_infer_matches_onnxruntime(triton, triton_repo, arun, batch):
    images = factories.images(batch, seed=batch)

    async def body(adapter: TritonAdapter):
        result = await adapter.load("cls_a")
        assert await adapter.model_ready("cls_a")
        return result, await adapter.infer("cls_a", {factories.INPUT: images})

    result, outputs = arun(body)
    assert result.name == "cls_a" and result.seconds > 0
    assert set(outputs) == {factories.OUTPUT}
    logits = outputs[factories.OUTPUT]
    assert logits.shape == (batch, factories.CLASSES) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, reference(triton_repo, "cls_a", images), rtol=1e-5, atol=1e-6)
    # One instance -> exactly one model process, attributed to this model.
    procs = triton.model_processes("cls_a")
    assert [p.instance for p in procs] == ["cls_a_0_0"]


def test_two_models_serve_their_own_weights(triton_repo, arun):
    images = factories.images(4)

    async def body(adapter: TritonAdapter):
        await asyncio.gather(adapter.load("cls_a"), adapter.load("cls_b"))
        return await asyncio.gather(
            adapter.infer("cls_a", {factories.INPUT: images}, outputs=[factories.OUTPUT]),
            adapter.infer("cls_b", {factories.INPUT: images}),
        )

    out_a, out_b = arun(body)
    np.testing.assert_allclose(out_a[factories.OUTPUT], reference(triton_repo, "cls_a", images), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_b[factories.OUTPUT], reference(triton_repo, "cls_b", images), rtol=1e-5, atol=1e-6)
    assert not np.allclose(out_a[factories.OUTPUT], out_b[factories.OUTPUT])


def test_concurrent_requests_are_batched_back_correctly(triton_repo, arun):
    """Many concurrent requests of different sizes: the backend concatenates and splits them back."""
    sizes = [1, 3, 1, 2, 5, 1, 4, 2, 1, 1, 3, 2]
    batches = [factories.images(n, seed=100 + i) for i, n in enumerate(sizes)]

    async def body(adapter: TritonAdapter):
        await adapter.load("cls_a")
        outs = await asyncio.gather(*(adapter.infer("cls_a", {factories.INPUT: b}) for b in batches))
        # The Python backend reports statistics after it has sent the responses, so they lag the
        # responses a little (seen: 17 of 26 right after the last response): poll.
        for _ in range(100):
            stats = (await adapter.statistics("cls_a"))["model_stats"][0]
            if int(stats.get("inference_count", 0)) >= sum(sizes):
                break
            await asyncio.sleep(0.05)
        return outs, stats

    outs, stats = arun(body)
    for batch, out in zip(batches, outs, strict=True):
        np.testing.assert_allclose(out[factories.OUTPUT], reference(triton_repo, "cls_a", batch), rtol=1e-5, atol=1e-6)
    assert int(stats["inference_count"]) == sum(sizes)  # the session server counts from its last load
    assert int(stats["execution_count"]) <= len(sizes)


def test_unload_is_confirmed_when_processes_are_gone(triton, arun):
    async def body(adapter: TritonAdapter):
        await adapter.load("cls_a", ModelConfig.read(triton.model_repository / "cls_a").with_instances("cpu", 2))
        pids = [p.pid for p in triton.model_processes("cls_a")]
        result = await adapter.unload("cls_a", timeout_s=30)
        return pids, result, await adapter.index(), await adapter.model_ready("cls_a")

    pids, result, index, ready = arun(body)
    assert len(pids) == 2
    assert result.processes_confirmed
    assert 0 <= result.call_seconds <= result.index_seconds <= result.gone_seconds
    assert triton.model_processes("cls_a") == []
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    assert [e.state for e in index if e.name == "cls_a"] == ["UNAVAILABLE"]
    assert not ready


@pytest.mark.parametrize("fast_release", [False, True], ids=["stock", "fast-release"])
def test_index_reads_unloading_while_the_process_exits_then_unavailable(triton_repo, fast_release):
    """What the docs claim about the index after an unload call, checked on the real server: it
    reads UNLOADING while the model process finishes (~1.1 s stock, milliseconds with fast
    release) and UNAVAILABLE only once the process has gone."""
    from orchestrator.triton import processes
    from orchestrator.triton.launcher import EmbeddedTriton

    async def body(server: EmbeddedTriton) -> list[tuple[str, bool]]:
        adapter = TritonAdapter(server.grpc_url, process_probe=server.process_probe())
        try:
            await adapter.load("cls_a")
            [stub] = server.model_processes("cls_a")
            await adapter.client.unload_model("cls_a")
            seen: list[tuple[str, bool]] = []  # (index state, process alive), each change once
            for _ in range(400):
                [state] = [e.state for e in await adapter.index() if e.name == "cls_a"]
                sample = (state, processes.is_alive(stub.pid))
                if not seen or seen[-1] != sample:
                    seen.append(sample)
                if sample == ("UNAVAILABLE", False):
                    break
                await asyncio.sleep(0.01)
            return seen
        finally:
            await adapter.close()

    with EmbeddedTriton(triton_repo, fast_release=fast_release) as server:
        seen = asyncio.run(body(server))
    if not fast_release:
        assert seen[0] == ("UNLOADING", True)
    assert seen[-1] == ("UNAVAILABLE", False)
    # the index leaves UNLOADING only once the process has gone (never UNAVAILABLE while it lives)
    assert ("UNAVAILABLE", True) not in seen


def test_reload_with_a_different_instance_count(triton, triton_repo, arun):
    base = ModelConfig.read(triton_repo / "cls_b")
    images = factories.images(2)

    async def body(adapter: TritonAdapter):
        counts = []
        for count in (1, 3, 2):
            await adapter.load("cls_b", base.with_instances("cpu", count))
            served = await adapter.model_config("cls_b")
            out = await adapter.infer("cls_b", {factories.INPUT: images})
            # A reload swaps instances; the old ones exit shortly after the call returns.
            for _ in range(200):
                if len(triton.model_processes("cls_b")) == count:
                    break
                await asyncio.sleep(0.05)
            counts.append((served.instance_groups[0].count, len(triton.model_processes("cls_b")), out))
        return counts

    for (served_count, processes, out), wanted in zip(arun(body), (1, 3, 2), strict=True):
        assert served_count == wanted
        assert processes == wanted
        np.testing.assert_allclose(out[factories.OUTPUT], reference(triton_repo, "cls_b", images), rtol=1e-5, atol=1e-6)


def test_infer_on_an_unloaded_model_is_not_ready(arun):
    async def body(adapter: TritonAdapter):
        await adapter.load("cls_a")
        await adapter.unload("cls_a")
        await adapter.infer("cls_a", {factories.INPUT: factories.images(1)})

    with pytest.raises(ModelNotReadyError) as info:
        arun(body)
    assert "cls_a" in str(info.value) and "not loaded" in str(info.value)
    assert "has no available versions" in (info.value.server_message or "")


def test_infer_on_an_unknown_model_is_not_found(arun):
    async def body(adapter: TritonAdapter):
        await adapter.infer("no_such_model", {factories.INPUT: factories.images(1)})

    with pytest.raises(ModelNotFoundError, match="no_such_model"):
        arun(body)


def test_infer_with_a_wrong_shape_is_an_inference_error(arun):
    async def body(adapter: TritonAdapter):
        await adapter.load("cls_a")
        await adapter.infer("cls_a", {factories.INPUT: np.zeros((1, 3, 16, 16), np.float32)})

    with pytest.raises(InferenceError) as info:
        arun(body)
    assert "unexpected shape" in (info.value.server_message or "")


def test_corrupt_onnx_fails_to_load_and_others_keep_serving(triton_repo, arun):
    factories.write_model(triton_repo, "corrupt", b"this is not an ONNX protobuf")
    images = factories.images(2)

    async def body(adapter: TritonAdapter):
        await adapter.load("cls_a")
        with pytest.raises(ModelLoadError) as info:
            await adapter.load("corrupt")
        return info.value, await adapter.infer("cls_a", {factories.INPUT: images}), await adapter.server_ready()

    error, out, ready = arun(body)
    assert "corrupt" in str(error)
    assert "Protobuf parsing failed" in (error.server_message or "")
    assert ready
    np.testing.assert_allclose(out[factories.OUTPUT], reference(triton_repo, "cls_a", images), rtol=1e-5, atol=1e-6)


def test_config_naming_tensors_missing_from_the_graph_fails_clearly(triton_repo, arun):
    """The backend checks config tensor names against the ONNX graph at load time."""
    factories.write_model(triton_repo, "misnamed", factories.make_classifier_onnx(seed=3))
    config = ModelConfig.read(triton_repo / "misnamed")
    bad = ModelConfig(
        name=config.name,
        backend=config.backend,
        max_batch_size=config.max_batch_size,
        inputs=config.inputs,
        outputs=(TensorSpec("scores", "TYPE_FP32", (factories.CLASSES,)),),
        instance_groups=config.instance_groups,
        parameters=config.parameters,
    )

    async def body(adapter: TritonAdapter):
        await adapter.load("misnamed", bad)

    with pytest.raises(ModelLoadError) as info:
        arun(body)
    assert "not in the ONNX graph" in (info.value.server_message or "")


def test_kind_gpu_on_a_cpu_only_host_fails_clearly(triton_repo, arun):
    factories.write_model(triton_repo, "gpu_expert", factories.make_classifier_onnx(), kind="KIND_GPU")

    async def body(adapter: TritonAdapter):
        await adapter.load("gpu_expert")

    with pytest.raises(ModelLoadError) as info:
        arun(body)
    # Triton itself refuses before the backend runs when no GPU is visible.
    assert "KIND_GPU" in (info.value.server_message or "")
    assert "no GPUs are available" in (info.value.server_message or "")


def test_unknown_model_load_and_unload_are_not_found(arun):
    async def load(adapter: TritonAdapter):
        await adapter.load("no_such_model")

    async def unload(adapter: TritonAdapter):
        await adapter.unload("no_such_model")

    with pytest.raises(ModelNotFoundError) as info:
        arun(load)
    assert "no_such_model" in str(info.value)
    assert "failed to poll from model repository" in (info.value.server_message or "")
    with pytest.raises(ModelNotFoundError, match="no_such_model"):
        arun(unload)


def test_concurrent_load_and_unload_of_one_model_are_serialised(triton, arun):
    """The per-model lock orders load/unload/load; the end state is the last call's."""

    async def body(adapter: TritonAdapter):
        await asyncio.gather(adapter.load("cls_a"), adapter.unload("cls_a"), adapter.load("cls_a"))
        return await adapter.model_ready("cls_a")

    assert arun(body)
    assert len(triton.model_processes("cls_a")) == 1


def test_server_unavailable_is_a_clear_error():
    async def body():
        adapter = TritonAdapter(f"127.0.0.1:{free_port()}", request_timeout_s=5)
        try:
            assert not await adapter.server_live()
            with pytest.raises(ServerUnavailableError, match="not reachable"):
                await adapter.index()
            with pytest.raises(ServerUnavailableError):
                await adapter.load("cls_a")
            with pytest.raises(ServerUnavailableError):
                await adapter.infer("cls_a", {factories.INPUT: factories.images(1)})
        finally:
            await adapter.close()

    asyncio.run(body())
