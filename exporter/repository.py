"""Writing the Triton model repository.

Layout (one repository serves both targets; only ``config.pbtxt`` differs)::

    <repo>/coe.yaml                    copy of the CoE definition the repository was built from
    <repo>/coserve_manifest.json       per expert: arch, bytes, parity error, calibration, fingerprint
    <repo>/<expert>/config.pbtxt       complete config (the server runs without auto-complete)
    <repo>/<expert>/1/model.onnx       single-file ONNX (weights inside)

Targets (``orchestrator.triton.model_config.TARGET_BACKENDS``):

* ``python-ort`` -> backend ``coserve_ort`` (the project's Python-based ONNX Runtime backend in
  the embedded server). Parameters ``intra_op_threads``, ``inter_op_threads``,
  ``enable_cpu_mem_arena`` ("0"/"1"), read by that backend's ``model.py``.
* ``onnxruntime`` -> Triton's native backend (NVIDIA's container). Parameters per its README:
  ``intra_op_thread_count``, ``inter_op_thread_count``, ``enable_mem_arena``.

Both: ``max_batch_size`` (16 by default; 0 for a user's ONNX file without a dynamic batch axis),
inputs/outputs with dims (batch axis excluded) and types, one explicit ``KIND_CPU`` instance
(Triton's ONNX default is 2 on CPU), and dynamic batching with no queue delay. The arena is off by
default because memory accounting needs freed memory to go back (BRIEF section 5).

Writes are atomic per file (temp file + rename), so an interrupted export never leaves a
truncated ``model.onnx`` behind a valid-looking manifest entry.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.coe import CoEDefinition, dump_coe
from orchestrator.errors import ConfigError, ExportError
from orchestrator.triton.model_config import TARGET_BACKENDS, InstanceGroup, ModelConfig, TensorSpec

DEFAULT_TARGET = "python-ort"
DEFAULT_MAX_BATCH = 16
MANIFEST = "coserve_manifest.json"
COE_FILE = "coe.yaml"
MODEL_FILE = "model.onnx"
VERSION = "1"


def check_target(target: str) -> str:
    if target not in TARGET_BACKENDS:
        raise ConfigError("--target", "", f"unknown target {target!r} (choose from {', '.join(TARGET_BACKENDS)})")
    return target


def backend_parameters(target: str, intra_op_threads: int = 1, inter_op_threads: int = 1, mem_arena: bool = False) -> dict[str, str]:
    """The config ``parameters`` each target's backend understands."""
    check_target(target)
    if target == "python-ort":
        return {
            "intra_op_threads": str(intra_op_threads),
            "inter_op_threads": str(inter_op_threads),
            "enable_cpu_mem_arena": "1" if mem_arena else "0",
        }
    return {
        "intra_op_thread_count": str(intra_op_threads),
        "inter_op_thread_count": str(inter_op_threads),
        "enable_mem_arena": "1" if mem_arena else "0",
    }


def expert_config(
    name: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    target: str = DEFAULT_TARGET,
    *,
    batched: bool = True,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    instance_count: int = 1,
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
    mem_arena: bool = False,
) -> ModelConfig:
    """A complete Triton config for one ONNX expert (dims exclude the batch axis when batched)."""
    return ModelConfig(
        name=name,
        backend=TARGET_BACKENDS[check_target(target)],
        max_batch_size=max_batch_size if batched else 0,
        inputs=inputs,
        outputs=outputs,
        instance_groups=(InstanceGroup("KIND_CPU", instance_count),),
        dynamic_batching=batched,
        max_queue_delay_us=0,
        parameters=backend_parameters(target, intra_op_threads, inter_op_threads, mem_arena),
    )


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_path(repo: str | Path, name: str) -> Path:
    return Path(repo) / name / VERSION / MODEL_FILE


def install_model(repo: str | Path, name: str, onnx_file: str | Path, config: ModelConfig, move: bool = False) -> Path:
    """Place ``onnx_file`` as ``<repo>/<name>/1/model.onnx`` (renamed when ``move``, else
    copied) and write the config. Returns the model directory."""
    dest = model_path(repo, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = Path(onnx_file)
    if move and src.resolve() != dest.resolve():
        os.replace(src, dest)
    elif src.resolve() != dest.resolve():
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{MODEL_FILE}.")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    write_config(repo, config)
    return dest.parent.parent


def write_config(repo: str | Path, config: ModelConfig) -> Path:
    """Write ``<repo>/<name>/config.pbtxt`` atomically and check it parses back complete."""
    model_dir = Path(repo) / config.name
    path = model_dir / "config.pbtxt"
    _atomic_write_bytes(path, config.to_pbtxt().encode())
    ModelConfig.read(model_dir)  # the server runs without auto-complete: never leave a bad config
    return path


def write_coe_copy(repo: str | Path, coe: CoEDefinition) -> Path:
    path = Path(repo) / COE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    dump_coe(coe, path)
    return path


def read_manifest(repo: str | Path) -> dict[str, Any]:
    """The repository's manifest (empty when missing or unreadable: then everything is re-exported)."""
    path = Path(repo) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"experts": {}}
    if not isinstance(data, dict) or not isinstance(data.get("experts"), dict):
        return {"experts": {}}
    return data


def write_manifest(repo: str | Path, experts: Mapping[str, Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> Path:
    path = Path(repo) / MANIFEST
    doc = {**(extra or {}), "experts": {k: dict(v) for k, v in sorted(experts.items())}}
    _atomic_write_bytes(path, (json.dumps(doc, indent=1, sort_keys=False) + "\n").encode())
    return path


def check_repo_dir(repo: str | Path) -> Path:
    """Create the repository directory (``ExportError`` naming it if that is impossible)."""
    p = Path(repo)
    if p.exists() and not p.is_dir():
        raise ExportError(f"model repository {p} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create model repository {p}: {exc.strerror or exc}") from None
    return p
