"""Inputs the exporter tests share: a tiny two-expert CoE file and a user's single-file ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_coe_yaml(name: str, seed: int) -> str:
    """A CoE with one 0.5 MB classifier and one 0.6 MB shared detector, 32x32 images, 5 components."""
    return f'''
name: {name}
seed: {seed}
image: {{channels: 3, height: 32, width: 32}}
experts:
  - {{name: cls_t000, arch: classifier, size_mb: 0.5}}
  - {{name: det_0, arch: detector, size_mb: 0.6}}
routing:
  - {{component_type: t000, classifier: cls_t000, no_defect_prob: 0.9, detector: det_0}}
board: {{name: b, mix: {{t000: 5}}}}
'''


def user_onnx(path: Path, weights: np.ndarray) -> Path:
    """A small valid single-file ONNX model: ``image [n, rows] @ weights -> logits [n, cols]``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows, cols = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["image", "w"], ["logits"])],
        "user",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", rows])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", cols])],
        [numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
