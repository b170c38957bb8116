"""Exporter subcommands: ``coe generate``, ``export``, ``expert add``.

Imports stay cheap (no torch, onnx or numpy at module level) so ``coserve --help`` is fast;
handlers import what they need. Every user-caused problem raises a ``CoserveError`` subclass,
which ``orchestrator.cli.main`` prints without a traceback.

Every numeric flag is typed with an ``orchestrator.cli_numbers`` validator (the YAML reader's
rules), so a bad number (``--jobs 0``, ``--zipf nan``, ``--components -10``) is refused by
argparse before anything runs; rules that involve two flags (``--components`` >= ``--types``)
and ``--only`` are ``ConfigError``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.cli_numbers import (
    fraction,
    integer,
    nonneg_int,
    nonneg_number,
    positive_int,
    positive_number,
)
from orchestrator.errors import ConfigError
from orchestrator.triton.model_config import TARGET_BACKENDS

#: the CoE reader's smallest image side (``orchestrator.coe.parse_coe``: image.height/width >= 8)
_image_side = integer(minimum=8)


def _shape(text: str) -> tuple[int, int, int]:
    """An argparse type: ``C,H,W``, three positive integers."""
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"must be C,H,W (three positive integers), got {text!r}")
    try:
        c, h, w = (positive_int(p) for p in parts)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be C,H,W (three positive integers), got {text!r}") from None
    return c, h, w


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``coe generate``, ``export`` and ``expert add``."""
    coe = subparsers.add_parser("coe", help="CoE definition files")
    coe_sub = coe.add_subparsers(dest="coe_command", required=True, metavar="SUBCOMMAND")
    gen = coe_sub.add_parser("generate", help="write a synthetic board's CoE definition")
    gen.add_argument("--preset", default="demo", help="demo | pcb-a | pcb-b (default: demo)")
    gen.add_argument("--types", type=positive_int, help="number of component types (one classifier each)")
    gen.add_argument("--detectors", type=nonneg_int, help="number of shared detectors (0: none)")
    gen.add_argument("--detector-share", type=fraction, help="fraction of types routed to a detector, in [0, 1]")
    gen.add_argument("--zipf", type=nonneg_number, help="Zipf exponent of the component counts, >= 0 (default: preset)")
    gen.add_argument("--seed", type=nonneg_int, help="seed of the board and the expert weights (>= 0)")
    gen.add_argument("--classifier-mb", type=positive_number, help="classifier weight size in MB, in (0, 2000]")
    gen.add_argument("--detector-mb", type=positive_number, help="detector weight size in MB, in (0, 2000]")
    gen.add_argument("--components", type=positive_int,
                     help="components per board, >= --types (default: the preset's, raised to --types if smaller)")
    gen.add_argument("--image-size", type=_image_side, help="square image side in pixels (>= 8)")
    gen.add_argument("--out", required=True, help="output YAML file")
    gen.set_defaults(func=_cmd_generate)

    exp = subparsers.add_parser("export", help="export a CoE's experts into a Triton model repository")
    exp.add_argument("--coe", required=True, help="CoE definition file (YAML)")
    exp.add_argument("--out", required=True, help="model repository directory")
    exp.add_argument("--target", default="python-ort", help=f"{' | '.join(TARGET_BACKENDS)} (default: python-ort)")
    exp.add_argument("--no-calibrate", action="store_true", help="keep the seeded biases (no routing calibration)")
    exp.add_argument("--only", help="comma-separated expert names to export (each must be in the CoE)")
    exp.add_argument("--jobs", type=positive_int, help="worker processes, >= 1 (default: CPU count, at most 4)")
    exp.add_argument(
        "--force",
        action="store_true",
        help="re-export experts even when unchanged, and accept changed user experts (expert add) as they are",
    )
    exp.set_defaults(func=_cmd_export)

    ex = subparsers.add_parser("expert", help="add a user's expert to a model repository")
    ex_sub = ex.add_subparsers(dest="expert_command", required=True, metavar="SUBCOMMAND")
    add = ex_sub.add_parser("add", help="add a torch module factory or an existing .onnx file")
    add.add_argument("--repo", required=True, help="model repository directory")
    add.add_argument("--name", required=True, help="expert (Triton model) name")
    src = add.add_mutually_exclusive_group(required=True)
    src.add_argument("--module", help="package.module:factory returning a torch.nn.Module")
    src.add_argument("--onnx", help="an existing single-file .onnx model")
    add.add_argument("--input-shape", type=_shape, help="C,H,W of one image (required with --module)")
    add.add_argument("--outputs", help="comma-separated output names (default: by the tensor contract)")
    add.add_argument("--target", default="python-ort", help=f"{' | '.join(TARGET_BACKENDS)} (default: python-ort)")
    add.add_argument(
        "--replace",
        action="store_true",
        help="install a new version of an expert already in the repository (same inputs and outputs; a running "
        "service's next load of it takes the new version); without it, an existing name is an error",
    )
    add.set_defaults(func=_cmd_expert_add)
    rb = ex_sub.add_parser(
        "rollback",
        help="take back an expert's newest version (a running service's next load takes the one before it)",
    )
    rb.add_argument("--repo", required=True, help="model repository directory")
    rb.add_argument("--name", required=True, help="expert (Triton model) name")
    rb.set_defaults(func=_cmd_expert_rollback)


def _cmd_generate(args: argparse.Namespace) -> int:
    from exporter.generate import generate, preset_options, top_share, write_coe

    opts = preset_options(
        args.preset,
        types=args.types,
        detectors=args.detectors,
        detector_share=args.detector_share,
        zipf=args.zipf,
        seed=args.seed,
        classifier_mb=args.classifier_mb,
        detector_mb=args.detector_mb,
        components=args.components,
        image_size=args.image_size,
    )
    if args.components is not None and args.components < opts.types:
        # generate() raises a preset's count to the number of types; an explicit one is not changed
        raise ConfigError(
            "--components", "", f"must be >= --types ({opts.types}) so every component type is on the board, got {args.components}"
        )
    coe = generate(opts, source=f"coe generate --preset {args.preset}")
    path = write_coe(coe, args.out)
    routed = sum(1 for r in coe.routing.values() if r.detector)
    used = {r.detector for r in coe.routing.values() if r.detector}
    unused = sorted(d.name for d in coe.detectors() if d.name not in used)
    if unused:
        # written as asked, but said: they would be exported and never run
        print(f"note: no component type is routed to {len(unused)} detector(s) ({', '.join(unused)}): "
              f"they are exported but never run (fewer --detectors, or more --types)", file=sys.stderr)
    print(
        f"wrote {path}: {len(coe.routing)} component types, {len(coe.classifiers())} classifiers, "
        f"{len(coe.detectors())} detectors ({routed} types routed to detectors), "
        f"{coe.board.total} components per board, top-35 share {top_share(dict(coe.board.mix)):.1%}"
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from exporter import repository
    from orchestrator.coe import load_coe

    repository.check_target(args.target)
    coe = load_coe(args.coe)
    from exporter.build import export_coe, select_experts

    # "" is a selection of nothing, not "everything": select_experts refuses it
    only = args.only.split(",") if args.only is not None else None
    names = select_experts(coe, only)
    from tqdm import tqdm

    with tqdm(total=len(names), unit="expert", desc="export", file=sys.stderr, disable=None) as bar:

        def progress(rep) -> None:  # type: ignore[no-untyped-def]
            bar.set_postfix_str(rep.name)
            bar.update(1)

        summary = export_coe(
            coe,
            args.out,
            args.target,
            calibrate=not args.no_calibrate,
            only=only,
            jobs=args.jobs,
            force=args.force,
            progress=progress,
            source=args.coe,
        )
    errs = [e.max_abs_error for e in summary.experts if e.max_abs_error is not None]
    worst = max(summary.experts, key=lambda e: e.max_abs_error or 0.0, default=None)
    cal = [e for e in summary.experts if e.calibration_target is not None]
    print(f"exported {summary.exported} expert(s), reused {len(summary.experts) - summary.exported} unchanged, into {summary.repo} "
          f"(target {summary.target}) in {summary.seconds:.1f} s")
    print(f"  total model bytes: {summary.total_bytes / 2**20:.1f} MiB over {len(summary.experts)} experts")
    if errs and worst is not None:
        print(f"  parity (ONNX Runtime vs torch): max abs error {max(errs):.3g} ({worst.name})")
    if cal:
        dev = max(abs((e.calibration_achieved or 0) - (e.calibration_target or 0)) for e in cal)
        print(f"  calibration: {len(cal)} experts, largest sample deviation from target {dev:.3f}")
    from exporter.build import REASON_CONTENT, REASON_NO_HASH

    for reason, why in ((REASON_CONTENT, "sha256 differs from the manifest"), (REASON_NO_HASH, "written by an older coserve")):
        hit = [e.name for e in summary.experts if e.reason == reason]
        if hit:
            print(f"  re-exported: {reason} ({why}): {', '.join(hit)}")
    for note in summary.notes:
        print(f"  {note}")
    return 0


def _cmd_expert_add(args: argparse.Namespace) -> int:
    from exporter import repository
    from exporter.build import add_expert

    repository.check_target(args.target)
    if args.onnx is not None and not Path(args.onnx).is_file():
        raise ConfigError(args.onnx, "", "ONNX file not found")
    if args.onnx is not None:
        # an ONNX file brings its own input shape and output names: refused rather than ignored
        for flag, value in (("--input-shape", args.input_shape), ("--outputs", args.outputs)):
            if value is not None:
                raise ConfigError(flag, "", "applies to --module only (an ONNX file's own inputs and outputs are used)")
    if args.module is not None and args.input_shape is None:
        raise ConfigError("--input-shape", "", "is required with --module (C,H,W)")
    outputs = [o.strip() for o in args.outputs.split(",")] if args.outputs else None
    rep = add_expert(
        args.repo,
        args.name,
        module=args.module,
        onnx_file=args.onnx,
        input_shape=args.input_shape,
        output_names=outputs,
        target=args.target,
        replace=args.replace,
    )
    err = "n/a" if rep.max_abs_error is None else f"{rep.max_abs_error:.3g}"
    version = repository.model_path(args.repo, rep.name).parent.name
    print(f"added {rep.name} version {version} to {args.repo}: {rep.bytes / 2**20:.2f} MiB, parity max abs error {err}")
    return 0


def _cmd_expert_rollback(args: argparse.Namespace) -> int:
    from exporter.build import rollback_expert

    retired, restored = rollback_expert(args.repo, args.name)
    print(f"rolled back {args.name} in {args.repo}: version {retired} retired, version {restored} is the newest again")
    return 0
