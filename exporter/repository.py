"""Writing the Triton model repository.

Layout (one repository serves both targets; only ``config.pbtxt`` differs)::

    <repo>/coe.yaml                    copy of the CoE definition the repository was built from
    <repo>/coserve_manifest.json       per expert: arch, bytes, parity error, calibration, fingerprint
    <repo>/<expert>/config.pbtxt       complete config (the server runs without auto-complete)
    <repo>/<expert>/<N>/model.onnx     single-file ONNX (weights inside), version N (1 first)

Versions (``orchestrator.model_versions``): a first install writes version 1; installing a file
with other content over an expert that has a live version (``expert add --replace``, or a
re-export of a changed definition) writes version N+1 beside it, atomically (written as
``.incoming-*`` and renamed), so a running service's next load of the expert takes it while
instances already loaded keep serving the old one. ``KEEP_VERSIONS`` live versions are kept (older
ones deleted); ``retire_latest`` (``coserve expert rollback``) moves the newest into ``retired/``.

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

from orchestrator import model_versions
from orchestrator.coe import CoEDefinition, dump_coe
from orchestrator.errors import ConfigError, ExportError
from orchestrator.triton.model_config import TARGET_BACKENDS, InstanceGroup, ModelConfig, TensorSpec

DEFAULT_TARGET = "python-ort"
DEFAULT_MAX_BATCH = 16
MANIFEST = "coserve_manifest.json"
COE_FILE = "coe.yaml"
MODEL_FILE = model_versions.MODEL_FILE
#: the version a first install writes
VERSION = "1"
#: live versions kept per expert (the newest, and two to roll back to); retired ones kept as many
KEEP_VERSIONS = 3
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


def _model_dirs(repo: str | Path, name: str, version: str = VERSION) -> Path:
    """Create (or open up) ``<repo>/<name>/<version>``: both ``DIR_MODE`` or wider."""
    model_dir = Path(repo) / name
    make_dirs(model_dir / version)
    _add_mode_bits(model_dir, DIR_MODE)
    _add_mode_bits(model_dir / version, DIR_MODE)
    return model_dir / version


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


def model_path(repo: str | Path, name: str, version: int | str | None = None) -> Path:
    """``<repo>/<name>/<version>/model.onnx``; ``version`` None: the newest live version (``1``
    for an expert with none yet)."""
    return model_versions.model_file(Path(repo) / name, version)


def install_model(
    repo: str | Path, name: str, onnx_file: str | Path, config: ModelConfig, move: bool = False, new_version: bool = False
) -> Path:
    """Place ``onnx_file`` as the expert's model file (renamed when ``move``, else copied) and
    write the config. Returns the model directory.

    Where to (module doc): the expert's first version ``1/`` when it has no live version; when
    ``onnx_file`` already is the newest version's file (reuse), nothing moves. Otherwise, with
    ``new_version`` (a new model: ``expert add --replace``, a re-export of a changed definition)
    a new version ``N+1`` (``model_versions.next_version``), renamed into place whole, live
    versions beyond ``KEEP_VERSIONS`` deleted, unless the newest version holds the same content
    (then it stays and ``onnx_file`` is dropped when moved); without it, the newest version's file
    is overwritten atomically (a repair: its content had been damaged). The placed file is
    ``FILE_MODE`` (a moved file too: it was written under the user's umask); a reused one only
    gains the read bits it lacks.
    """
    src = Path(onnx_file)
    check_runtime_reads(src, config)
    model_dir = Path(repo) / name
    newest = model_versions.latest_version(model_dir)
    if newest is None:
        _place(src, _model_dirs(repo, name) / MODEL_FILE, move)
    else:
        current = model_dir / str(newest) / MODEL_FILE
        _model_dirs(repo, name, str(newest))  # opens up existing directories too
        if src.resolve() == current.resolve():
            _add_mode_bits(current, FILE_MODE)
        elif not new_version:
            _place(src, current, move)
        elif file_sha256(src) == file_sha256(current):
            if move:
                src.unlink()
        else:
            _new_version(model_dir, src, move)
    write_config(repo, config)
    return model_dir


def _place(src: Path, dest: Path, move: bool) -> None:
    if move and src.resolve() != dest.resolve():
        os.chmod(src, FILE_MODE)
        os.replace(src, dest)
    elif src.resolve() != dest.resolve():
        _atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
    else:
        _add_mode_bits(dest, FILE_MODE)


def _new_version(model_dir: Path, src: Path, move: bool) -> int:
    """Write ``src`` as version N+1 of ``model_dir`` whole (a temporary directory renamed into
    place: a reader never sees a version directory without its file), then prune old versions.
    The caller has opened up ``model_dir`` (``_model_dirs``)."""
    version = model_versions.next_version(model_dir)
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=model_dir))
    try:
        os.chmod(incoming, DIR_MODE)
        _place(src, incoming / MODEL_FILE, move)
        os.rename(incoming, model_dir / str(version))
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    for old in model_versions.live_versions(model_dir)[:-KEEP_VERSIONS]:
        shutil.rmtree(model_dir / str(old), ignore_errors=True)
    return version


def retire_latest(repo: str | Path, name: str) -> tuple[int, int]:
    """Roll back: move the expert's newest live version into ``retired/`` so the one before it
    is the newest again. Returns ``(retired, now_newest)``. ``ExportError`` naming the expert
    when it has fewer than two live versions (nothing to go back to)."""
    model_dir = Path(repo) / name
    if not model_dir.is_dir():
        raise ExportError(f"expert {name!r} is not in the model repository {repo}")
    live = model_versions.live_versions(model_dir)
    if len(live) < 2:
        have = f"only version {live[0]}" if live else "no version"
        raise ExportError(f"expert {name!r} has {have} in {model_dir}: there is no earlier version to roll back to")
    retired_dir = make_dirs(model_dir / model_versions.RETIRED_DIR)
    _add_mode_bits(retired_dir, DIR_MODE)
    newest = live[-1]
    target = retired_dir / str(newest)
    if target.exists():  # a number is never reused (next_version), so this is a leftover copy
        shutil.rmtree(target)
    os.rename(model_dir / str(newest), target)
    for old in model_versions.retired_versions(model_dir)[:-KEEP_VERSIONS]:
        shutil.rmtree(retired_dir / str(old), ignore_errors=True)
    return newest, live[-2]


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
