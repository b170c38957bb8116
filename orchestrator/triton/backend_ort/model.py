"""coserve's Python-based ONNX Runtime backend for Triton (backend name ``coserve_ort``).

The embedded server has no native ``onnxruntime`` backend (the nvidia-pytriton wheel does not ship
one), so ONNX experts are hosted through Triton's Python backend. This file is installed once as
``<triton home>/backends/coserve_ort/model.py`` and every model whose config.pbtxt says
``backend: "coserve_ort"`` runs it; a model directory holds only ``config.pbtxt`` and
``<version>/model.onnx``.

Contract:
- One ``onnxruntime.InferenceSession`` per model instance (each instance is its own stub process),
  on ``<model_dir>/<version>/model.onnx``.
- ``KIND_CPU`` -> CPUExecutionProvider. ``KIND_GPU`` -> CUDAExecutionProvider on the instance's
  device id; if onnxruntime has no CUDA provider (or it fails to initialise) the load fails with a
  clear message instead of silently running on the CPU.
- Config ``parameters`` (all optional, string values):
  ``intra_op_threads`` / ``inter_op_threads`` (int, 0 = onnxruntime's default),
  ``enable_cpu_mem_arena`` (true/false, default true: onnxruntime's default; false returns
  activation memory after each run at some speed cost),
  ``enable_mem_pattern`` (true/false, default true),
  ``cudnn_conv_algo_search`` (HEURISTIC|EXHAUSTIVE|DEFAULT, default HEURISTIC: EXHAUSTIVE makes
  the first run very slow, DEFAULT makes every run slower, docs/triton.md),
  ``gpu_mem_limit_bytes`` (int, CUDA arena limit, default unlimited).
- Tensor names in the config equal the ONNX graph's names.
- ``execute`` batches across requests: requests whose inputs agree in dtype and per-item shape are
  concatenated along the batch axis, run once, and split back. A request that cannot be run gets
  its own TritonError response; it never takes the model process down.

Runs inside the stub's embedded interpreter, so it may import only what that interpreter has
(numpy < 2, onnxruntime) and must not import the ``orchestrator`` package.
"""

from __future__ import annotations

import sys
import time

# Wall-clock marks of this process's start-up, logged once per instance (``TIMING_TAG``) so that
# ``coserve profile --explain`` can split a load into its parts from outside Triton.
_T_MODULE = time.time()
_NUMPY_BEFORE = "numpy" in sys.modules  # the stub's utilities import numpy before this module

import json  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402  (provided by the Python backend at runtime)

_T_NUMPY = time.time()

try:  # imported lazily in initialize() would hide the error until the first load; report it clearly there
    import onnxruntime as ort
except ImportError as _exc:  # pragma: no cover - depends on the stub's interpreter
    ort = None
    _ORT_IMPORT_ERROR: str | None = str(_exc)
else:
    _ORT_IMPORT_ERROR = None
_T_ORT = time.time()

#: prefix of the one log line per instance with its start-up marks (seconds since the epoch)
TIMING_TAG = "coserve_ort timing"


def _param(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {})
    text = value.get("string_value", "") if isinstance(value, dict) else str(value)
    return text.strip() or default


def _param_bool(config: dict[str, Any], key: str, default: bool) -> bool:
    text = _param(config, key, "true" if default else "false").lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"parameter {key!r} must be true or false, got {text!r}")


def _param_int(config: dict[str, Any], key: str, default: int) -> int:
    text = _param(config, key, str(default))
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"parameter {key!r} must be an integer, got {text!r}") from None


class TritonPythonModel:
    """One instance of an ONNX expert: one onnxruntime session in this stub process."""

    def initialize(self, args: dict[str, str]) -> None:
        if ort is None:
            raise RuntimeError(
                f"coserve_ort: onnxruntime cannot be imported in the model process ({_ORT_IMPORT_ERROR}); "
                "the stub embeds the interpreter on LD_LIBRARY_PATH/PATH, install onnxruntime there"
            )
        config = json.loads(args["model_config"])
        self.model_name = args.get("model_name", config.get("name", "?"))
        model_dir = args["model_repository"]
        version = args["model_version"]
        path = os.path.join(model_dir, version, "model.onnx")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"coserve_ort: model {self.model_name!r}: no ONNX file at {path}")

        options = ort.SessionOptions()
        options.intra_op_num_threads = _param_int(config, "intra_op_threads", 0)
        options.inter_op_num_threads = _param_int(config, "inter_op_threads", 0)
        options.enable_cpu_mem_arena = _param_bool(config, "enable_cpu_mem_arena", True)
        options.enable_mem_pattern = _param_bool(config, "enable_mem_pattern", True)

        kind = args.get("model_instance_kind", "CPU").upper()
        if kind == "GPU":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError(
                    f"coserve_ort: model {self.model_name!r}: KIND_GPU requested but onnxruntime has no "
                    f"CUDAExecutionProvider (available: {', '.join(ort.get_available_providers())}); "
                    "install onnxruntime-gpu or use KIND_CPU"
                )
            cuda_options: dict[str, str] = {
                "device_id": str(int(args.get("model_instance_device_id", "0"))),
                "cudnn_conv_algo_search": _param(config, "cudnn_conv_algo_search", "HEURISTIC"),
            }
            limit = _param_int(config, "gpu_mem_limit_bytes", 0)
            if limit > 0:
                cuda_options["gpu_mem_limit"] = str(limit)
            providers: list[Any] = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]

        t_session = time.time()
        try:
            self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        except Exception as exc:
            raise RuntimeError(f"coserve_ort: model {self.model_name!r}: cannot load {path}: {exc}") from None
        marks = {
            "module": _T_MODULE, "numpy": _T_NUMPY, "ort": _T_ORT, "session_start": t_session,
            "session_done": time.time(),
        }
        pb_utils.Logger.log_info(
            f"{TIMING_TAG} model={self.model_name} pid={os.getpid()} numpy_before={int(_NUMPY_BEFORE)} "
            + " ".join(f"{k}={v:.6f}" for k, v in marks.items())
        )
        if kind == "GPU" and "CUDAExecutionProvider" not in self.session.get_providers():
            # onnxruntime falls back to the CPU silently when the CUDA libraries fail to load.
            raise RuntimeError(
                f"coserve_ort: model {self.model_name!r}: KIND_GPU requested but the CUDA execution provider "
                "failed to initialise (check the CUDA/cuDNN libraries on LD_LIBRARY_PATH)"
            )

        self.input_names = [t["name"] for t in config.get("input", [])]
        self.output_names = [t["name"] for t in config.get("output", [])]
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n in self.input_names if n not in graph_inputs] + [
            n for n in self.output_names if n not in graph_outputs
        ]
        if missing:
            raise ValueError(
                f"coserve_ort: model {self.model_name!r}: config tensors {missing} are not in the ONNX graph "
                f"(graph inputs {sorted(graph_inputs)}, outputs {sorted(graph_outputs)})"
            )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        # Group requests that can share one run: same dtype and per-item shape for every input.
        groups: dict[tuple[Any, ...], list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            try:
                feeds: dict[str, np.ndarray] = {}
                for name in self.input_names:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is None:
                        raise ValueError(f"missing input {name!r}")
                    array = tensor.as_numpy()
                    if array.ndim == 0:
                        raise ValueError(f"input {name!r} has no batch axis")
                    feeds[name] = array
            except Exception as exc:
                responses[index] = self._error(exc)
                continue
            key = tuple((name, a.dtype.str, a.shape[1:]) for name, a in feeds.items())
            groups.setdefault(key, []).append((index, feeds))

        for members in groups.values():
            try:
                if len(members) == 1:
                    batch = members[0][1]
                else:
                    batch = {
                        name: np.concatenate([feeds[name] for _, feeds in members], axis=0)
                        for name in self.input_names
                    }
                results = self.session.run(self.output_names, batch)
            except Exception as exc:
                for index, _ in members:
                    responses[index] = self._error(exc)
                continue
            offset = 0
            for index, feeds in members:
                size = next(iter(feeds.values())).shape[0]
                wanted = set(requests[index].requested_output_names() or self.output_names)
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(result[offset : offset + size]))
                    for name, result in zip(self.output_names, results, strict=True)
                    if name in wanted
                ]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                offset += size
        return responses

    def _error(self, exc: Exception) -> Any:
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(f"coserve_ort: model {self.model_name!r}: {exc}")
        )

    def finalize(self) -> None:
        # Drop the session explicitly so its arena is released before the process exits.
        self.session = None
