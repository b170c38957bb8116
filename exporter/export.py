"""``torch.nn.Module`` -> single-file ``model.onnx``, checked and parity-tested against torch.

Exporter choice (measured here, torch 2.13 CPU, a small conv net): the TorchScript-based exporter
(``dynamo=False``) takes ~0.15 s per expert, the dynamo exporter ~1-4 s (it traces through
torch.export and runs onnxscript's optimiser). A 120-type board has ~125 experts and must export
in under 5 minutes on 2 cores, so the default is ``"torchscript"``; ``exporter="dynamo"`` is
available (and is what ``torch.onnx`` recommends for new models). Both pin ``OPSET`` and mark the
batch axis dynamic, and both produce graphs whose input/output names follow
``orchestrator.experts_io``. ONNX files are written with the weights inside (no external-data
file) -- protobuf limits that to < 2 GB, which every expert here is.

Parity: ONNX Runtime (CPU) against torch on seeded random inputs at batch 1 and a larger batch;
the max abs error over all outputs must be <= ``atol + rtol * max|torch output|`` (random deep
nets have logits of widely varying scale, hence the relative part), else ``ExportError``.

Also: ``load_factory("pkg.mod:factory")`` for a user's own module and ``inspect_onnx(path)`` for
an existing ``.onnx`` file (checked; its input/output names, types and dims for the config).
"""

from __future__ import annotations

import importlib
import io
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import ExportError
from orchestrator.experts_io import INPUT_NAME
from orchestrator.triton.model_config import TensorSpec

OPSET = 18
#: the newest ONNX IR version written: NVIDIA's Triton 24.10 container (docker-compose.yml) runs
#: ONNX Runtime 1.19, which reads IR <= 10 (exporter.repository.ONNX_LIMITS checks every install)
MAX_IR_VERSION = 10
DEFAULT_PARITY_BATCHES = (1, 4)
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
#: protobuf's hard limit for a single-file model
MAX_ONNX_BYTES = 2**31 - 1

#: ONNX TensorProto element type -> Triton data type name
_ONNX_TO_TRITON = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}


@dataclass(frozen=True)
class OnnxInfo:
    """What the Triton config needs from an ONNX file (dims exclude the batch axis)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    batched: bool  # every input/output has a dynamic leading (batch) axis


@dataclass(frozen=True)
class ExportResult:
    """One exported expert."""

    name: str
    path: Path
    bytes: int
    max_abs_error: float | None  # None when parity was skipped
    seconds: float
    info: OnnxInfo


def _onnx():
    import onnx  # deferred: importing onnx costs ~0.3 s

    return onnx


def export_module(
    module: Any,
    path: str | Path,
    input_shape: Sequence[int],
    output_names: Sequence[str],
    *,
    name: str = "model",
    input_name: str = INPUT_NAME,
    opset: int = OPSET,
    exporter: str = "torchscript",
    parity: bool = True,
    parity_batches: Sequence[int] = DEFAULT_PARITY_BATCHES,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
) -> ExportResult:
    """Export ``module`` (eval mode is forced) to a single-file ONNX model at ``path``.

    ``input_shape`` is (C, H, W) without the batch axis. Raises ``ExportError`` (naming ``name``)
    when torch cannot export it, the checker rejects it, the file would exceed 2 GB, or the
    parity error exceeds the tolerance.
    """
    import torch

    t0 = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    example = torch.zeros((2, *input_shape), dtype=torch.float32)  # batch 2: avoids 0/1 specialisation
    n_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    if n_bytes >= MAX_ONNX_BYTES:
        raise ExportError(f"{name}: weights are {n_bytes / 2**30:.2f} GiB; a single-file ONNX must stay under 2 GB")
    dyn_axes = {input_name: {0: "batch"}, **{o: {0: "batch"} for o in output_names}}
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "torchscript":
                torch.onnx.export(
                    module,
                    (example,),
                    buf,  # type: ignore[arg-type]  # the TorchScript exporter accepts file objects
                    input_names=[input_name],
                    output_names=list(output_names),
                    opset_version=opset,
                    dynamic_axes=dyn_axes,
                    do_constant_folding=True,
                    dynamo=False,
                )
                data = buf.getvalue()
            elif exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=4096)
                forward_arg = _first_forward_arg(module)
                program = torch.onnx.export(
                    module,
                    (example,),
                    input_names=[input_name],
                    output_names=list(output_names),
                    opset_version=opset,
                    dynamic_shapes={forward_arg: {0: batch}},
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                )
                assert program is not None
                data = program.model_proto.SerializeToString()
            else:
                raise ExportError(f"{name}: unknown exporter {exporter!r} (torchscript or dynamo)")
    except ExportError:
        raise
    except Exception as exc:  # torch raises many types; the user needs the expert and the reason
        raise ExportError(f"{name}: torch could not export the module to ONNX: {type(exc).__name__}: {exc}") from exc
    data = _pin_ir_version(_pin_output_dims(data, module, example, name))
    path.write_bytes(data)
    info = inspect_onnx(path, name=name)
    err = None
    if parity:
        err = check_parity(module, path, input_shape, name=name, batches=parity_batches, atol=atol, rtol=rtol, seed=seed)
    return ExportResult(name, path, path.stat().st_size, err, time.perf_counter() - t0, info)


def _pin_output_dims(data: bytes, module: Any, example: Any, name: str) -> bytes:
    """Write torch's actual output dims (after the batch axis) into the graph's outputs.

    The TorchScript exporter loses static dims through ops like ``cat`` (boxes come out as
    [batch, ?, ?]); Triton configs and ``inspect_onnx`` need them, and a self-describing file
    serves the native backend too. One forward pass at the export batch gives them.
    """
    import torch

    onnx = _onnx()
    with torch.no_grad():
        ref = module(example)
    refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    model = onnx.load_from_string(data)
    if len(model.graph.output) != len(refs):
        raise ExportError(f"{name}: ONNX graph has {len(model.graph.output)} outputs, the module returns {len(refs)}")
    changed = False
    for out, r in zip(model.graph.output, refs, strict=True):
        dims = out.type.tensor_type.shape.dim
        if len(dims) != r.dim():
            continue
        for d, size in zip(list(dims)[1:], r.shape[1:], strict=True):
            if not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = int(size)
                changed = True
    return model.SerializeToString() if changed else data


def _pin_ir_version(data: bytes) -> bytes:
    """Lower a newer IR version to ``MAX_IR_VERSION`` (one file serves both targets). IR 11+ only
    adds element types (FLOAT4E2M1, FLOAT8E8M0, ...) that the zoo's FP32 experts never use, and
    ``inspect_onnx`` runs the checker on the result."""
    onnx = _onnx()
    model = onnx.load_from_string(data)
    if model.ir_version <= MAX_IR_VERSION:
        return data
    model.ir_version = MAX_IR_VERSION
    return bytes(model.SerializeToString())


def _first_forward_arg(module: Any) -> str:
    import inspect

    params = [p for p in inspect.signature(module.forward).parameters.values() if p.name != "self"]
    return params[0].name if params else "x"


def ort_session(path: str | Path, threads: int = 1) -> Any:
    """A CPU ONNX Runtime session (few threads: the exporter runs beside other work)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def check_parity(
    module: Any,
    path: str | Path,
    input_shape: Sequence[int],
    *,
    name: str = "model",
    batches: Sequence[int] = DEFAULT_PARITY_BATCHES,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
) -> float:
    """Max abs error of ONNX Runtime vs torch on seeded random inputs; ``ExportError`` above tolerance.

    Inputs are uniform in [0, 1] like the normalised component images.
    """
    import torch

    try:
        sess = ort_session(path)
    except Exception as exc:
        raise ExportError(f"{name}: ONNX Runtime cannot load {path}: {exc}") from None
    in_name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    worst = 0.0
    for b in batches:
        x = rng.random((b, *input_shape), dtype=np.float32)
        with torch.no_grad():
            ref = module(torch.from_numpy(x))
        refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        try:
            got = sess.run(None, {in_name: x})
        except Exception as exc:
            raise ExportError(f"{name}: ONNX Runtime failed at batch {b}: {exc}") from None
        if len(got) != len(refs):
            raise ExportError(f"{name}: ONNX model has {len(got)} outputs, torch module {len(refs)}")
        for r, g in zip(refs, got, strict=True):
            r_np = r.detach().cpu().numpy()
            if r_np.shape != g.shape:
                raise ExportError(f"{name}: output shape {g.shape} from ONNX Runtime, {r_np.shape} from torch (batch {b})")
            err = float(np.max(np.abs(r_np.astype(np.float64) - g.astype(np.float64)))) if r_np.size else 0.0
            tol = atol + rtol * float(np.max(np.abs(r_np))) if r_np.size else atol
            if not np.isfinite(err) or err > tol:
                raise ExportError(f"{name}: parity check failed at batch {b}: max abs error {err:.3g} > tolerance {tol:.3g}")
            worst = max(worst, err)
    return worst


def _dims(value_info: Any) -> tuple[list[int | str], int]:
    t = value_info.type.tensor_type
    dims: list[int | str] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims, int(t.elem_type)


def inspect_onnx(path: str | Path, name: str | None = None) -> OnnxInfo:
    """Check an ONNX file and read its inputs/outputs (``ExportError`` naming the file if bad).

    The leading axis counts as the batch axis when it is symbolic (or -1) on every tensor; then
    the returned dims exclude it. Otherwise the model is treated as unbatched (full dims).
    """
    onnx = _onnx()
    label = name or str(path)
    p = Path(path)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except FileNotFoundError:
        raise ExportError(f"{label}: ONNX file not found: {p}") from None
    except Exception as exc:
        raise ExportError(f"{label}: not a readable ONNX model ({p}): {type(exc).__name__}: {exc}") from None
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise ExportError(f"{label}: {p} keeps weights in external data files; a single-file model is required")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ExportError(f"{label}: ONNX checker rejected {p}: {exc}") from None
    inits = {i.name for i in model.graph.initializer}
    raw_in = [_dims(v) + (v.name,) for v in model.graph.input if v.name not in inits]
    raw_out = [_dims(v) + (v.name,) for v in model.graph.output]
    if not raw_in or not raw_out:
        raise ExportError(f"{label}: {p} must have at least one input and one output")
    batched = all(dims and not isinstance(dims[0], int) for dims, _, _ in raw_in + raw_out)

    def spec(dims: list[int | str], elem: int, tname: str) -> TensorSpec:
        if elem not in _ONNX_TO_TRITON:
            raise ExportError(f"{label}: tensor {tname!r} has an ONNX element type ({elem}) Triton does not support")
        body = dims[1:] if batched else dims
        return TensorSpec(tname, _ONNX_TO_TRITON[elem], tuple(d if isinstance(d, int) else -1 for d in body))

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxInfo(
        inputs=tuple(spec(*r) for r in raw_in),
        outputs=tuple(spec(*r) for r in raw_out),
        opset=int(opset),
        batched=batched,
    )


def load_factory(spec: str) -> Callable[[], Any]:
    """Resolve ``"package.module:factory"`` to a callable (``ExportError`` with the reason if not)."""
    if ":" not in spec:
        raise ExportError(f"module factory must look like 'package.module:factory', got {spec!r}")
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ExportError(f"module factory must look like 'package.module:factory', got {spec!r}")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:
        raise ExportError(f"cannot import module {mod_name!r} for factory {spec!r}: {type(exc).__name__}: {exc}") from None
    obj: Any = mod
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ExportError(f"module {mod_name!r} has no attribute {attr!r} (factory {spec!r})") from None
    if not callable(obj):
        raise ExportError(f"factory {spec!r} is not callable")
    return obj


def build_from_factory(spec: str) -> Any:
    """Call the factory and check it returned a ``torch.nn.Module``."""
    import torch

    factory = load_factory(spec)
    try:
        module = factory()
    except Exception as exc:
        raise ExportError(f"factory {spec!r} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"factory {spec!r} returned {type(module).__name__}, not a torch.nn.Module")
    return module
