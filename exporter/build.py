"""CoE definition -> Triton model repository (zoo -> calibration -> ONNX + parity -> repository).

``export_coe`` is what ``coserve export`` runs. Per expert: build the zoo model with its seeded
weights, calibrate its bias on the board source (unless ``calibrate=False``), export to ONNX with
the parity check, install it with a config for the target. Experts whose *fingerprint* (spec,
CoE seed, the routing rules and board counts that drive its calibration, image shape, exporter
version, opset) matches the manifest and whose ``model.onnx`` still has the content the manifest
recorded (its ``sha256``, taken when the file was written) are not re-exported -- only their
config is rewritten (so switching ``--target`` is instant). A file whose content changed (same
size or not) is re-exported, and the summary says so; an entry from an older coserve without a
hash cannot be verified and is re-exported too. A user's expert (``expert add``) that is not in
the CoE cannot be re-exported: if its file changed, the export stops with an ``ExportError``
naming the file and the fixes (``expert add --replace``, or ``force`` to accept the file as it
is); one recorded without a hash gets its hash recorded (trusted as it is, with a note).

Speed: experts are independent, so with ``jobs > 1`` they run in a process pool (spawned, one
torch thread per worker: a forked torch process can deadlock in its thread pool). Small jobs run
inline because starting a worker costs ~2-3 s (importing torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

from orchestrator.coe import CoEDefinition, ExpertSpec
from orchestrator.errors import ConfigError, CoserveError, ExportError
from orchestrator.triton.model_config import ModelConfig

from . import repository as repo_mod

#: bump when the zoo, the board source's images or the calibration change what gets exported
EXPORTER_VERSION = "3"
#: below this many experts to export, a process pool costs more than it saves
POOL_MIN_EXPERTS = 8


@dataclass(frozen=True)
class ExpertReport:
    """What happened to one expert."""

    name: str
    arch: str
    bytes: int
    weight_bytes: int
    max_abs_error: float | None
    seconds: float
    calibration_target: float | None = None
    calibration_achieved: float | None = None
    calibration_shift: float = 0.0
    reused: bool = False  # fingerprint and content hash matched: the existing model.onnx was kept
    params: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    sha256: str = ""  # of model.onnx, taken when it was written ("" in manifests of older versions)
    reason: str = ""  # why it was (re-)exported, one of the REASON_* texts; "" when reused


#: why an expert was exported (``ExpertReport.reason``); the last two are integrity findings
REASON_NEW = "not in the repository"
REASON_CHANGED = "definition changed"
REASON_FORCED = "forced"
REASON_CONTENT = "file content changed"
REASON_NO_HASH = "no content hash in the manifest"
#: user experts (``add_expert``) have no fingerprint: the exporter cannot rebuild them
USER_ARCHS = ("onnx", "module")


@dataclass(frozen=True)
class ExportSummary:
    repo: Path
    target: str
    experts: list[ExpertReport]
    seconds: float
    notes: list[str] = field(default_factory=list)  # about user experts (hash recorded, file accepted)

    @property
    def total_bytes(self) -> int:
        return sum(e.bytes for e in self.experts)

    @property
    def max_abs_error(self) -> float | None:
        errs = [e.max_abs_error for e in self.experts if e.max_abs_error is not None]
        return max(errs) if errs else None

    @property
    def exported(self) -> int:
        return sum(1 for e in self.experts if not e.reused)


def fingerprint(coe: CoEDefinition, spec: ExpertSpec, calibrate: bool) -> str:
    """Everything the exported file depends on, hashed."""
    rules = sorted(
        (r.component_type, r.no_defect_prob, r.detector or "", coe.board.mix.get(r.component_type, 0))
        for r in coe.routing.values()
        if spec.name in (r.classifier, r.detector)
    )
    from exporter.export import OPSET  # cheap module-level import chain (no torch at import)

    doc = {
        "v": EXPORTER_VERSION,
        "opset": OPSET,
        "seed": coe.seed,
        "spec": [spec.name, spec.arch, spec.size_mb, spec.num_classes, list(spec.input_shape), sorted(spec.params.items())],
        "calibrate": calibrate,
        "rules": rules if calibrate else [],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def export_expert(
    coe: CoEDefinition,
    name: str,
    onnx_path: str | Path,
    calibrate: bool = True,
    parity: bool = True,
    threads: int | None = None,
) -> ExpertReport:
    """Build, calibrate and export one expert of the CoE to ``onnx_path`` (no config written)."""
    import torch

    from exporter import calibrate as cal
    from exporter import zoo
    from exporter.export import export_module

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    spec = coe.experts[name]
    params = zoo.resolve_params(spec)
    model = zoo.build_expert(spec, coe.seed, params)
    c = cal.calibrate_expert(model, spec, coe) if calibrate else None
    result = export_module(
        model, onnx_path, spec.input_shape, zoo.output_names(spec.arch), name=name, parity=parity, seed=zoo.expert_seed(coe.seed, name)
    )
    return ExpertReport(
        name=name,
        arch=spec.arch,
        bytes=result.bytes,
        weight_bytes=zoo.weight_bytes(spec),
        max_abs_error=result.max_abs_error,
        seconds=time.perf_counter() - t0,
        calibration_target=c.target if c else None,
        calibration_achieved=c.achieved if c else None,
        calibration_shift=c.shift if c else 0.0,
        params=params.as_dict(),
        sha256=repo_mod.file_sha256(onnx_path),
    )


def _worker(args: tuple[CoEDefinition, str, str, bool, bool]) -> ExpertReport:
    coe, name, path, calibrate, parity = args
    try:
        return export_expert(coe, name, path, calibrate, parity, threads=1)
    except CoserveError as exc:
        # ConfigError's 3-argument constructor does not survive unpickling in the parent;
        # the message (which names the expert) is what matters
        raise ExportError(str(exc)) from None


def check_params(coe: CoEDefinition, names: Iterable[str], source: str = "<coe>") -> None:
    """Every selected expert's zoo ``params`` resolve (``ConfigError`` naming file and field)."""
    from exporter import zoo

    index = {n: i for i, n in enumerate(coe.experts)}
    for n in names:
        spec = coe.experts[n]
        try:
            zoo.size_params(spec.arch, spec.size_mb, spec.input_shape[0], spec.num_classes, spec.params)
        except (ValueError, TypeError) as exc:
            raise ConfigError(source, f"experts[{index[n]}].params", str(exc)) from None


def select_experts(coe: CoEDefinition, only: Iterable[str] | None) -> list[str]:
    """The experts to export: all of the CoE's for ``None``, else the named ones (stripped,
    blanks dropped, duplicates once, in the given order). ``ConfigError`` (field ``--only``) for
    a selection that names no expert or names experts the CoE does not have (all listed)."""
    if only is None:
        return list(coe.experts)
    names = list(dict.fromkeys(n.strip() for n in only if n.strip()))
    if not names:
        raise ConfigError("--only", "", "names no expert (give comma-separated expert names, or leave it out to export all)")
    unknown = [n for n in names if n not in coe.experts]
    if unknown:
        raise ConfigError("--only", "", f"unknown expert(s) {', '.join(unknown)} (not in the CoE definition)")
    return names


def reuse_verdict(entry: dict[str, Any] | None, fp: str, model_file: Path, force: bool = False) -> str:
    """Why the expert must be exported ("" when its file can be reused).

    Reusable: not ``force``, the manifest ``entry`` has fingerprint ``fp``, and ``model_file``
    exists with the entry's size and ``sha256`` (hashed here: once per export run).
    """
    if force:
        return REASON_FORCED
    if not entry or not model_file.is_file():
        return REASON_NEW
    if entry.get("fingerprint") != fp:
        return REASON_CHANGED
    if not entry.get("sha256"):
        return REASON_NO_HASH
    if model_file.stat().st_size != entry.get("bytes") or repo_mod.file_sha256(model_file) != entry["sha256"]:
        return REASON_CONTENT
    return ""


def check_user_experts(root: Path, entries: dict[str, Any], skip: Iterable[str], force: bool = False) -> list[str]:
    """Verify the user experts (``add_expert``) recorded in the manifest ``entries``, except
    ``skip`` (the ones being exported), against their ``sha256``; updates ``entries`` in place.

    A changed file is an ``ExportError`` naming it and the fixes, unless ``force`` (then its new
    hash and size are recorded). An entry without a hash (older coserve) gets one recorded. A
    missing file is not checked. Returns notes on what was recorded.
    """
    notes: list[str] = []
    skipped = set(skip)
    for name, entry in sorted(entries.items()):
        if name in skipped or entry.get("arch") not in USER_ARCHS:
            continue
        mp = repo_mod.model_path(root, name)
        if not mp.is_file():
            continue
        digest = repo_mod.file_sha256(mp)
        if entry.get("sha256") == digest:
            continue
        if not entry.get("sha256"):
            notes.append(f"{name}: recorded the content hash of {mp} (the manifest had none)")
        elif force:
            notes.append(f"{name}: accepted the changed {mp} as it is (--force)")
        else:
            raise ExportError(
                f"{name}: {mp} changed since it was added (its sha256 differs from the manifest's), and a "
                f"user's expert cannot be re-exported; re-add it with `coserve expert add --replace --name {name} ...`, "
                f"or pass --force to accept the file as it is now"
            )
        entries[name] = {**entry, "sha256": digest, "bytes": mp.stat().st_size}
    return notes


def export_coe(
    coe: CoEDefinition,
    repo: str | Path,
    target: str = repo_mod.DEFAULT_TARGET,
    *,
    calibrate: bool = True,
    parity: bool = True,
    only: Sequence[str] | None = None,
    jobs: int | None = None,
    force: bool = False,
    threads: int = 1,
    progress: Callable[[ExpertReport], None] | None = None,
    source: str = "<coe>",
) -> ExportSummary:
    """Export the CoE's experts into the model repository ``repo`` for ``target``.

    ``jobs``: worker processes (default: the CPU count, capped at 4); ``force`` re-exports even
    when fingerprints and content hashes match (and accepts changed user experts as they are,
    see ``check_user_experts``); ``threads`` is torch's intra-op thread count for inline exports
    (1 by default: on a small shared CPU, 2 torch threads competing with other work ran 5-10x
    *slower* than 1 in our measurements; parallelism comes from the worker processes);
    ``progress`` is called once per expert as it finishes; ``source`` (the CoE file) is named in
    configuration errors.
    Raises ``ExportError`` (naming the expert) on the first expert that fails, or (before any
    work) naming a user expert whose file changed.
    """
    t0 = time.perf_counter()
    repo_mod.check_target(target)
    root = repo_mod.check_repo_dir(repo)
    names = select_experts(coe, only)
    check_params(coe, names, source)
    manifest = repo_mod.read_manifest(root)
    entries: dict[str, Any] = dict(manifest["experts"])
    notes = check_user_experts(root, entries, names, force)
    repo_mod.write_coe_copy(root, coe)

    reports: list[ExpertReport] = []
    todo: list[str] = []
    reasons: dict[str, str] = {}
    fps = {n: fingerprint(coe, coe.experts[n], calibrate) for n in names}
    for n in names:
        old = entries.get(n)
        mp = repo_mod.model_path(root, n)
        reasons[n] = reuse_verdict(old, fps[n], mp, force)
        if not reasons[n]:
            assert old is not None
            rep = ExpertReport(**{**_report_fields(old), "name": n, "reused": True, "seconds": 0.0, "reason": ""})
            _install(root, n, mp, target)
            reports.append(rep)
            if progress:
                progress(rep)
        else:
            todo.append(n)

    tmpdir = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    try:
        def finish(rep: ExpertReport) -> None:
            rep = dc_replace(rep, fingerprint=fps[rep.name], reason=reasons[rep.name])
            # a changed definition is a new model (a new version beside the old one); a damaged
            # or unhashed file of an unchanged one is repaired in place
            new_model = reasons[rep.name] in (REASON_CHANGED, REASON_FORCED)
            _install(root, rep.name, tmpdir / f"{rep.name}.onnx", target, move=True, new_version=new_model)
            entries[rep.name] = _manifest_entry(rep, repo_mod.model_path(root, rep.name).parent.name)
            repo_mod.write_manifest(root, entries, {"coe": coe.name, "exporter_version": EXPORTER_VERSION})
            reports.append(rep)
            if progress:
                progress(rep)

        n_jobs = jobs if jobs is not None else min(4, os.cpu_count() or 1)
        if n_jobs <= 1 or len(todo) < POOL_MIN_EXPERTS:
            for n in todo:
                finish(export_expert(coe, n, tmpdir / f"{n}.onnx", calibrate, parity, threads=threads))
        else:
            import multiprocessing as mp_

            with ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp_.get_context("spawn")) as pool:
                futures = {pool.submit(_worker, (coe, n, str(tmpdir / f"{n}.onnx"), calibrate, parity)): n for n in todo}
                try:
                    for fut in as_completed(futures):
                        finish(fut.result())
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        for leftover in tmpdir.glob("*"):
            leftover.unlink(missing_ok=True)
        tmpdir.rmdir()
    repo_mod.write_manifest(root, entries, {"coe": coe.name, "exporter_version": EXPORTER_VERSION})
    order = {n: i for i, n in enumerate(names)}
    reports.sort(key=lambda r: order[r.name])
    return ExportSummary(root, target, reports, time.perf_counter() - t0, notes)


def _install(root: Path, name: str, onnx_file: Path, target: str, move: bool = False, new_version: bool = False) -> None:
    from exporter.export import inspect_onnx

    info = inspect_onnx(onnx_file, name=name)
    config = repo_mod.expert_config(name, info.inputs, info.outputs, target, batched=info.batched)
    repo_mod.install_model(root, name, onnx_file, config, move=move, new_version=new_version)


_REPORT_KEYS = {f for f in ExpertReport.__dataclass_fields__}


def _report_fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k in _REPORT_KEYS}


def _manifest_entry(rep: ExpertReport, version: str) -> dict[str, Any]:
    """The manifest entry of an installed expert; ``version``: the live version its ``sha256``
    and ``bytes`` describe (the newest)."""
    d = asdict(rep)
    d.pop("reused", None)
    d.pop("seconds", None)
    d.pop("reason", None)
    d["export_seconds"] = round(rep.seconds, 3)
    d["version"] = version
    return d


def add_expert(
    repo: str | Path,
    name: str,
    *,
    module: str | None = None,
    onnx_file: str | Path | None = None,
    input_shape: Sequence[int] | None = None,
    output_names: Sequence[str] | None = None,
    target: str = repo_mod.DEFAULT_TARGET,
    parity: bool = True,
    replace: bool = False,
) -> ExpertReport:
    """Add a user's expert to a repository: a ``pkg.mod:factory`` module or an existing ``.onnx``.

    An expert of that name already in the repository (its directory exists) is an
    ``ExportError`` naming it, checked before any work, unless ``replace``.

    Module: ``input_shape`` (C, H, W) is required; output names default to the tensor contract
    by count (1 -> ``logits``, 3 -> ``boxes, objectness, class_logits``, else ``output_<i>``).
    ONNX file: checked, its names/types/dims go into the config, and it is run once on zeros
    with ONNX Runtime when its input dims are static. The manifest records the installed file's
    ``sha256`` (``export_coe`` verifies it).
    """
    from exporter.export import build_from_factory, export_module, inspect_onnx, ort_session
    from orchestrator.config_reader import Reader

    t0 = time.perf_counter()
    repo_mod.check_target(target)
    Reader("--name").name(name, "")
    if (module is None) == (onnx_file is None):
        raise ExportError("give exactly one of a module factory or an ONNX file")
    root = repo_mod.check_repo_dir(repo)
    if (root / name).exists() and not replace:
        raise ExportError(
            f"expert {name!r} already exists in the model repository ({root / name}); "
            "pass --replace to install a new version of it"
        )
    if module is not None:
        import torch

        if not input_shape or len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
            raise ConfigError("--input-shape", "", f"a module needs the input shape as C,H,W, got {input_shape!r}")
        shape = tuple(int(d) for d in input_shape)
        model = build_from_factory(module).eval()
        try:
            with torch.no_grad():
                out = model(torch.zeros((1, *shape)))
        except Exception as exc:
            raise ExportError(f"{name}: the module fails on an input of shape (1, {', '.join(map(str, shape))}): {exc}") from None
        n_out = 1 if isinstance(out, torch.Tensor) else len(out)
        names = list(output_names) if output_names else _default_outputs(n_out)
        if len(names) != n_out:
            raise ExportError(f"{name}: the module returns {n_out} outputs but {len(names)} names were given")
        tmp = Path(tempfile.mkdtemp(prefix=".add-", dir=root)) / "model.onnx"
        try:
            res = export_module(model, tmp, shape, names, name=name, parity=parity)
            config = repo_mod.expert_config(name, res.info.inputs, res.info.outputs, target, batched=res.info.batched)
            _check_same_signature(root, config)
            repo_mod.install_model(root, name, tmp, config, new_version=True)
        finally:
            tmp.unlink(missing_ok=True)
            tmp.parent.rmdir()
        err, size = res.max_abs_error, res.bytes
        arch = "module"
    else:
        assert onnx_file is not None
        info = inspect_onnx(onnx_file, name=name)
        if all(d > 0 for t in info.inputs for d in t.dims):
            import numpy as np

            try:
                sess = ort_session(onnx_file)
                feeds: dict[str, Any] = {}
                for t, inp in zip(info.inputs, sess.get_inputs(), strict=True):
                    dtype = np.float32 if t.data_type == "TYPE_FP32" else np.int64 if t.data_type == "TYPE_INT64" else None
                    if dtype is None:
                        feeds = {}
                        break
                    feeds[inp.name] = np.zeros(((1,) if info.batched else ()) + t.dims, dtype=dtype)
                if feeds:
                    sess.run(None, feeds)
            except Exception as exc:
                raise ExportError(f"{name}: ONNX Runtime cannot run {onnx_file}: {exc}") from None
        config = repo_mod.expert_config(name, info.inputs, info.outputs, target, batched=info.batched)
        _check_same_signature(root, config)
        repo_mod.install_model(root, name, onnx_file, config, new_version=True)
        err, size = None, repo_mod.model_path(root, name).stat().st_size
        arch = "onnx"
    dest = repo_mod.model_path(root, name)
    rep = ExpertReport(name=name, arch=arch, bytes=size, weight_bytes=size, max_abs_error=err,
                       seconds=time.perf_counter() - t0, sha256=repo_mod.file_sha256(dest))
    manifest = repo_mod.read_manifest(root)
    entries = dict(manifest["experts"])
    entries[name] = _manifest_entry(rep, dest.parent.name)
    repo_mod.write_manifest(root, entries, {k: v for k, v in manifest.items() if k != "experts"})
    return rep


def _check_same_signature(root: Path, config: ModelConfig) -> None:
    """A new version must keep the expert's contract (inputs, outputs, batching): a service
    streaming boards loads it under the same config, and routing sends it the same images.
    ``ExportError`` saying what differs; nothing to check for a new expert."""
    if not (root / config.name / "config.pbtxt").is_file():
        return
    try:
        old = ModelConfig.read(root / config.name)
    except CoserveError:
        return  # an unreadable config is replaced by the new one
    diffs = [
        f"{what} {a} -> {b}"
        for what, a, b in (
            ("inputs", old.inputs, config.inputs),
            ("outputs", old.outputs, config.outputs),
            ("max_batch_size", old.max_batch_size, config.max_batch_size),
        )
        if a != b
    ]
    if diffs:
        raise ExportError(
            f"{config.name}: the new model does not keep the expert's inputs and outputs ({'; '.join(diffs)}); "
            "a new version must be a drop-in replacement: add it under another name instead"
        )


def rollback_expert(repo: str | Path, name: str) -> tuple[int, int]:
    """``coserve expert rollback``: the expert's newest version goes to ``retired/`` and the one
    before it is the newest again (a running service's next load takes it); the manifest entry
    follows (its ``sha256``, ``bytes`` and ``version`` are the restored file's). Returns
    ``(retired, restored)``; ``ExportError`` when there is nothing to roll back to."""
    root = Path(repo)
    retired, restored = repo_mod.retire_latest(root, name)
    path = repo_mod.model_path(root, name, restored)
    manifest = repo_mod.read_manifest(root)
    entries = dict(manifest["experts"])
    entry = dict(entries.get(name, {}))
    entry.update(sha256=repo_mod.file_sha256(path), bytes=path.stat().st_size, version=str(restored))
    entries[name] = entry
    repo_mod.write_manifest(root, entries, {k: v for k, v in manifest.items() if k != "experts"})
    return retired, restored


def _default_outputs(n: int) -> list[str]:
    from orchestrator.experts_io import CLASSIFIER_OUTPUT, DETECTOR_OUTPUTS

    if n == 1:
        return [CLASSIFIER_OUTPUT]
    if n == len(DETECTOR_OUTPUTS):
        return list(DETECTOR_OUTPUTS)
    return [f"output_{i}" for i in range(n)]


def read_config(repo: str | Path, name: str) -> ModelConfig:
    """The config.pbtxt of one expert in the repository."""
    return ModelConfig.read(Path(repo) / name)
