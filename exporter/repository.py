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
default because memory accounting needs freed memory to go back (docs/triton.md).

Writes are atomic per file (temp file + rename), so an interrupted export never leaves a
truncated ``model.onnx`` behind a valid-looking manifest entry.

Modes: Triton often runs as another user (a container), so every file written here is made
``0644`` and every directory created here ``0755``, whatever the umask (``tempfile.mkstemp``
creates ``0600`` files, which is where private configs came from). A file or model directory
that already exists only gains the read (and, for directories, search) bits it lacks; a
repository root that already exists is left as it is (its mode is the user's choice).

The manifest records each ``model.onnx``'s ``sha256`` (``file_sha256``), computed when the file
is written, so reuse can tell a changed file from an unchanged one of the same size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
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
#: target -> (newest ONNX IR version, newest default-domain opset) its runtime reads. NVIDIA's
#: Triton 24.10 container (nvcr.io/nvidia/tritonserver:24.10-py3, docker-compose.yml) ships ONNX
#: Runtime 1.19, which reads IR <= 10 and opsets <= 21; python-ort runs this venv's onnxruntime.
ONNX_LIMITS: dict[str, tuple[int, int]] = {"onnxruntime": (10, 21)}
#: every file the exporter writes into a repository (readable by a Triton running as another user)
FILE_MODE = 0o644
#: every directory the exporter creates in a repository
DIR_MODE = 0o755


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


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's content (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _add_mode_bits(path: Path, bits: int) -> None:
    """Give an existing ``path`` the permission ``bits`` it lacks (never takes any away);
    ``ExportError`` naming it when that is not allowed (someone else owns it)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & bits != bits:
        try:
            os.chmod(path, mode | bits)
        except OSError as exc:
            raise ExportError(
                f"{path} is mode {mode:o} and cannot be made {mode | bits:o} ({exc.strerror or exc}): "
                f"a Triton running as another user could not read it; fix its mode or owner"
            ) from None


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p`` whose created directories are ``DIR_MODE`` whatever the umask (existing
    ones are left alone)."""
    p = Path(path)
    missing = [d for d in (p, *p.parents) if not d.exists()]
    p.mkdir(parents=True, exist_ok=True)
    for d in reversed(missing):
        os.chmod(d, DIR_MODE)
    return p


def _model_dirs(repo: str | Path, name: str) -> Path:
    """Create (or open up) ``<repo>/<name>/<VERSION>``: both ``DIR_MODE`` or wider."""
    model_dir = Path(repo) / name
    make_dirs(model_dir / VERSION)
    _add_mode_bits(model_dir, DIR_MODE)
    _add_mode_bits(model_dir / VERSION, DIR_MODE)
    return model_dir / VERSION


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through a temp file in its directory (``write(tmp)``), then rename it into
    place with ``FILE_MODE``. On any failure the old file stays and the temp file is removed."""
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)  # mkstemp made it 0600: Triton may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda tmp: tmp.write_bytes(data))


def model_path(repo: str | Path, name: str) -> Path:
    return Path(repo) / name / VERSION / MODEL_FILE


def install_model(repo: str | Path, name: str, onnx_file: str | Path, config: ModelConfig, move: bool = False) -> Path:
    """Place ``onnx_file`` as ``<repo>/<name>/1/model.onnx`` (renamed when ``move``, else
    copied) and write the config. Returns the model directory.

    The placed file is ``FILE_MODE`` (a moved file too: it was written under the user's umask);
    when ``onnx_file`` already is that path (reuse), it only gains the read bits it lacks.
    """
    src = Path(onnx_file)
    check_runtime_reads(src, config)
    dest = model_path(repo, name)
    _model_dirs(repo, name)
    if move and src.resolve() != dest.resolve():
        os.chmod(src, FILE_MODE)
        os.replace(src, dest)
    elif src.resolve() != dest.resolve():
        _atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
    else:
        _add_mode_bits(dest, FILE_MODE)
    write_config(repo, config)
    return dest.parent.parent


def check_runtime_reads(onnx_file: str | Path, config: ModelConfig) -> None:
    """``ExportError`` naming the model and the pin if ``config``'s backend cannot read the file's
    IR version or opset (``ONNX_LIMITS``): a refusal at export rather than a failed load in the container."""
    target = next((t for t, b in TARGET_BACKENDS.items() if b == config.backend), None)
    if target not in ONNX_LIMITS:
        return
    import onnx  # deferred: importing onnx costs ~0.3 s

    max_ir, max_opset = ONNX_LIMITS[target]
    model = onnx.load(str(onnx_file), load_external_data=False)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if model.ir_version > max_ir or opset > max_opset:
        raise ExportError(
            f"{config.name}: {onnx_file} is ONNX IR {model.ir_version}, opset {opset}; target {target} "
            f"(Triton 24.10's ONNX Runtime 1.19) reads IR <= {max_ir} and opset <= {max_opset}: re-export it "
            "with an older opset (or use --target python-ort)"
        )


def write_config(repo: str | Path, config: ModelConfig) -> Path:
    """Write ``<repo>/<name>/config.pbtxt`` atomically and check it parses back complete."""
    model_dir = Path(repo) / config.name
    path = model_dir / "config.pbtxt"
    _atomic_write_bytes(path, config.to_pbtxt().encode())
    ModelConfig.read(model_dir)  # the server runs without auto-complete: never leave a bad config
    return path


def write_coe_copy(repo: str | Path, coe: CoEDefinition) -> Path:
    """Write ``<repo>/coe.yaml`` (atomically, ``FILE_MODE``)."""
    path = Path(repo) / COE_FILE
    _atomic_write(path, lambda tmp: dump_coe(coe, tmp))
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
    """Create the repository directory, ``DIR_MODE`` when created here (``ExportError`` naming
    it if that is impossible)."""
    p = Path(repo)
    if p.exists() and not p.is_dir():
        raise ExportError(f"model repository {p} exists and is not a directory")
    try:
        make_dirs(p)
    except OSError as exc:
        raise ExportError(f"cannot create model repository {p}: {exc.strerror or exc}") from None
    return p
