"""The coserve_ort backend's own logic (batching across requests, per-request errors, device
checks) with a real onnxruntime session. Triton's ``triton_python_backend_utils`` exists only
inside a stub process, so a minimal stand-in with the same calls is installed here; the
integration tests run the same file inside a real tritonserver.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from orchestrator.triton.launcher import BACKEND_MODEL_PY
from tests.integration import factories


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor], error: Any = None) -> None:
        self.output_tensors, self.error = output_tensors, error


class TritonError:
    def __init__(self, message: str) -> None:
        self.message = message


class Logger:
    lines: list[str] = []

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.lines.append(message)


class Request:
    def __init__(self, inputs: dict[str, np.ndarray], requested: list[str] | None = None) -> None:
        self.inputs, self.requested = inputs, requested or []

    def requested_output_names(self) -> list[str]:
        return self.requested


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    utils = types.ModuleType("triton_python_backend_utils")
    utils.Tensor = Tensor  # type: ignore[attr-defined]
    utils.InferenceResponse = InferenceResponse  # type: ignore[attr-defined]
    utils.TritonError = TritonError  # type: ignore[attr-defined]
    Logger.lines = []
    utils.Logger = Logger  # type: ignore[attr-defined]

    def get_input_tensor_by_name(request: Request, name: str) -> Tensor | None:
        return Tensor(name, request.inputs[name]) if name in request.inputs else None

    utils.get_input_tensor_by_name = get_input_tensor_by_name  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    spec = importlib.util.spec_from_file_location("coserve_ort_model_under_test", BACKEND_MODEL_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def initialize(backend: types.ModuleType, model_dir: Path, kind: str = "CPU", **parameters: str) -> Any:
    config = json.loads(factories.classifier_config(model_dir.name).to_json())
    config.setdefault("parameters", {}).update({k: {"string_value": v} for k, v in parameters.items()})
    model = backend.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_name": model_dir.name,
            "model_repository": str(model_dir),
            "model_version": "1",
            "model_instance_kind": kind,
            "model_instance_device_id": "0",
        }
    )
    return model


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return factories.write_model(tmp_path, "cls", factories.make_classifier_onnx(seed=5))


def reference(model_dir: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {factories.INPUT: batch})[0]


def test_requests_are_run_together_and_split_back(backend, model_dir):
    model = initialize(backend, model_dir, intra_op_threads="1")
    runs: list[int] = []
    real_run = model.session.run
    model.session = types.SimpleNamespace(
        run=lambda names, feeds: runs.append(len(feeds[factories.INPUT])) or real_run(names, feeds)
    )
    batches = [factories.images(n, seed=n) for n in (1, 3, 2)]
    responses = model.execute([Request({factories.INPUT: b}) for b in batches])
    assert runs == [6]  # one run for all three requests
    for batch, response in zip(batches, responses, strict=True):
        assert response.error is None
        [tensor] = response.output_tensors
        assert tensor.name() == factories.OUTPUT
        np.testing.assert_allclose(tensor.as_numpy(), reference(model_dir, batch), rtol=1e-5, atol=1e-6)


def test_a_bad_request_fails_alone(backend, model_dir):
    model = initialize(backend, model_dir)
    good = factories.images(2)
    responses = model.execute(
        [
            Request({factories.INPUT: good}),
            Request({"wrong_name": good}),  # missing input
            Request({factories.INPUT: good.astype(np.float64)}),  # onnxruntime rejects the dtype
            Request({factories.INPUT: good[:1]}),
        ]
    )
    assert responses[0].error is None and responses[3].error is None
    np.testing.assert_allclose(responses[0].output_tensors[0].as_numpy(), reference(model_dir, good), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(responses[3].output_tensors[0].as_numpy(), reference(model_dir, good[:1]), rtol=1e-5, atol=1e-6)
    assert "missing input 'image'" in responses[1].error.message
    assert "coserve_ort: model 'cls'" in responses[2].error.message and responses[2].output_tensors == []


def test_only_requested_outputs_are_returned(backend, model_dir):
    model = initialize(backend, model_dir)
    [response] = model.execute([Request({factories.INPUT: factories.images(1)}, requested=["something_else"])])
    assert response.error is None and response.output_tensors == []


def test_kind_gpu_without_cuda_provider_is_a_clear_load_error(backend, model_dir):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the error path needs a CPU-only build")
    with pytest.raises(RuntimeError, match="KIND_GPU requested but onnxruntime has no CUDAExecutionProvider"):
        initialize(backend, model_dir, kind="GPU")


def test_session_options_come_from_parameters(backend, model_dir, monkeypatch):
    seen: dict[str, Any] = {}
    real = backend.ort.InferenceSession

    def spy(path: str, sess_options: Any, providers: Any) -> Any:
        seen.update(
            intra=sess_options.intra_op_num_threads,
            inter=sess_options.inter_op_num_threads,
            arena=sess_options.enable_cpu_mem_arena,
            providers=providers,
        )
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(backend.ort, "InferenceSession", spy)
    initialize(backend, model_dir, intra_op_threads="2", inter_op_threads="1", enable_cpu_mem_arena="false")
    assert seen == {"intra": 2, "inter": 1, "arena": False, "providers": ["CPUExecutionProvider"]}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [({"enable_cpu_mem_arena": "maybe"}, "must be true or false"), ({"intra_op_threads": "many"}, "must be an integer")],
)
def test_bad_parameters_fail_the_load(backend, model_dir, parameters, message):
    with pytest.raises(ValueError, match=message):
        initialize(backend, model_dir, **parameters)


def test_missing_onnx_file_fails_the_load(backend, model_dir):
    (model_dir / "1" / "model.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="no ONNX file at"):
        initialize(backend, model_dir)


def test_each_instance_logs_its_start_up_marks_in_order(backend: types.ModuleType, model_dir: Path) -> None:
    """``coserve profile --explain`` splits a load from this line; a missing or unordered mark breaks it."""
    initialize(backend, model_dir)
    [line] = [m for m in Logger.lines if m.startswith(backend.TIMING_TAG)]
    fields = dict(part.split("=", 1) for part in line[len(backend.TIMING_TAG):].split())
    marks = [float(fields[k]) for k in ("module", "numpy", "ort", "session_start", "session_done")]
    assert marks == sorted(marks) and marks[-1] - marks[0] < 60
    assert fields["numpy_before"] in ("0", "1") and int(fields["pid"]) == os.getpid()
