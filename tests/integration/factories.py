"""Small real ONNX experts and model-repository entries for integration tests.

The exporter builds the real experts; these tests must not depend on it, so they build a tiny
conv + global-pool + gemm classifier directly with ``onnx.helper`` and seeded numpy weights:
input ``image`` FP32 [-1, 3, 32, 32] -> output ``logits`` FP32 [-1, 4], opset 17.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from orchestrator.triton.model_config import PYTHON_ORT_BACKEND, InstanceGroup, ModelConfig, TensorSpec

INPUT = "image"
OUTPUT = "logits"
IMAGE_SHAPE = (3, 32, 32)
CLASSES = 4
OPSET = 17


def make_classifier_onnx(seed: int = 0, channels: int = 8) -> bytes:
    """Serialized ONNX model: Conv(3->channels, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    conv_w = rng.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.2
    conv_b = rng.standard_normal(channels).astype(np.float32) * 0.1
    fc_w = rng.standard_normal((CLASSES, channels)).astype(np.float32) * 0.5
    fc_b = rng.standard_normal(CLASSES).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Conv", [INPUT, "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], [OUTPUT], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", *IMAGE_SHAPE])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[
            numpy_helper.from_array(conv_w, "conv_w"),
            numpy_helper.from_array(conv_b, "conv_b"),
            numpy_helper.from_array(fc_w, "fc_w"),
            numpy_helper.from_array(fc_b, "fc_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="coserve-tests")
    model.ir_version = 8  # readable by any onnxruntime >= 1.10
    onnx.checker.check_model(model)
    return model.SerializeToString()


def classifier_config(name: str, kind: str = "KIND_CPU", count: int = 1, max_batch_size: int = 16) -> ModelConfig:
    """A complete config.pbtxt for the tiny classifier on the coserve_ort backend."""
    return ModelConfig(
        name=name,
        backend=PYTHON_ORT_BACKEND,
        max_batch_size=max_batch_size,
        inputs=(TensorSpec(INPUT, "TYPE_FP32", IMAGE_SHAPE),),
        outputs=(TensorSpec(OUTPUT, "TYPE_FP32", (CLASSES,)),),
        instance_groups=(InstanceGroup(kind, count),),
        # One thread per session: the test host has 2 cores shared with other work.
        parameters={"intra_op_threads": "1", "inter_op_threads": "1"},
    )


def write_model(
    repo: str | Path, name: str, onnx_bytes: bytes, kind: str = "KIND_CPU", count: int = 1
) -> Path:
    """Write ``<repo>/<name>/1/model.onnx`` and a complete config.pbtxt; returns the model dir."""
    model_dir = Path(repo) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.onnx").write_bytes(onnx_bytes)
    classifier_config(name, kind, count).write(model_dir)
    return model_dir


def images(batch: int, seed: int = 1) -> np.ndarray:
    """A seeded FP32 batch of images [batch, 3, 32, 32]."""
    return np.random.default_rng(seed).standard_normal((batch, *IMAGE_SHAPE)).astype(np.float32)
