"""``coserve demo``: generate the demo CoE, export it, and inspect one board on the embedded Triton.

This is shell code: it composes the exporter (which imports torch) with the orchestrator, importing
both lazily inside the handler so that ``coserve --help`` stays fast and the orchestrator's library
modules never depend on the exporter.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli_numbers import nonneg_int, positive_int
from orchestrator.errors import CoserveError

if TYPE_CHECKING:
    from orchestrator.coe import CoEDefinition


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="export the demo CoE and inspect one board through a real tritonserver",
        description="Export the demo CoE (or --coe) to ONNX and inspect one synthetic board through a real tritonserver.",
        epilog=(
            "exit codes: 0 every component has a verdict; 1 some components were not inspected (an expert "
            "failed; the summary says which and why); 2 bad input; 3 the Triton server was lost part-way "
            "(died or stopped answering); 130/143 interrupted by SIGINT/SIGTERM (the embedded server is "
            "stopped first)"
        ),
    )
    demo.add_argument("--repo", default="model_repository", help="model repository to export into (default: ./model_repository)")
    demo.add_argument("--coe", help="CoE definition to use (default: generate the 'demo' preset into REPO/demo-coe.yaml)")
    demo.add_argument("--max-resident", type=positive_int, default=2, help="size the executor's memory budget to hold this many of the largest experts, plus one max batch (default: 2)")
    demo.add_argument("--triton-url", help="use a running Triton at HOST:PORT (gRPC) instead of the embedded one")
    demo.add_argument("--board-seed", type=nonneg_int, default=0, help="seed of the synthetic board (default: 0)")
    demo.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from exporter.build import export_coe
    from exporter.generate import generate, preset_options, write_coe
    from orchestrator.coe import load_coe
    from orchestrator.demo import run_demo
    from orchestrator.triton.adapter import check_grpc_url

    if args.triton_url is not None:
        check_grpc_url(args.triton_url)
        check_reachable(args.triton_url)
    repo = Path(args.repo)
    if repo.exists() and not repo.is_dir():
        raise CoserveError(f"--repo {repo}: exists and is not a directory (give a model repository directory)")
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CoserveError(f"--repo {repo}: cannot create the model repository ({exc.strerror or exc})") from None
    if args.coe:
        coe_path = Path(args.coe)
        coe = load_coe(coe_path)
    else:
        coe = generate(preset_options("demo"), source="coe generate --preset demo")
        coe_path = write_coe(coe, repo / "demo-coe.yaml")
        print(f"wrote {coe_path}: {len(coe.experts)} experts "
              f"({len(coe.classifiers())} classifiers, {len(coe.detectors())} shared detectors)")
    print(f"exporting {len(coe.experts)} experts to ONNX in {repo} (unchanged experts are reused) ...")
    summary = export_coe(coe, repo)
    worst = max((e.max_abs_error or 0.0 for e in summary.experts), default=0.0)
    print(f"  {summary.exported} exported, {len(summary.experts) - summary.exported} reused, "
          f"{summary.total_bytes / 2**20:.1f} MiB, parity max abs error {worst:.2g}, {summary.seconds:.1f} s")
    profile_path = ensure_profile(coe, repo, args.triton_url)
    with tqdm(total=coe.board.total, desc="inspecting", unit="img", file=sys.stderr, leave=False, disable=None) as bar:
        report = run_demo(coe, Path(coe_path), repo, profile_path, board_seed=args.board_seed,
                          max_resident=args.max_resident, triton_url=args.triton_url, progress=bar.update)
    return report.exit_code()


def check_reachable(url: str) -> None:
    """A ``ServerUnavailableError`` now if nothing answers at ``url``: before the export, which
    takes minutes on a large CoE, not after it."""
    import asyncio

    from orchestrator.triton.adapter import TritonAdapter

    async def probe() -> None:
        async with TritonAdapter(url, request_timeout_s=30.0) as adapter:
            await adapter.server_version()

    asyncio.run(probe())


def ensure_profile(coe: CoEDefinition, repo: Path, triton_url: str | None) -> Path:
    """``<repo>/profile.yaml`` if it was measured with the mode this run's server will have, else
    a quick profile measured now (and cached there)."""
    from orchestrator.config_reader import read_yaml_file
    from orchestrator.core.profile import parse_profile
    from orchestrator.errors import ConfigError
    from orchestrator.triton.launcher import UNLOAD_MODE_FAST, UNLOAD_MODE_STOCK, build_fast_release
    from profiler.measure import Plan
    from profiler.run import EXTERNAL_UNLOAD_MODE, check_cache_current, run_profile, write_profile

    path = repo / "profile.yaml"
    mode = EXTERNAL_UNLOAD_MODE if triton_url else (UNLOAD_MODE_FAST if build_fast_release()[0] else UNLOAD_MODE_STOCK)
    if path.is_file():
        try:
            cached = parse_profile(read_yaml_file(path), str(path))
            check_cache_current(cached, mode, str(path))
            if set(cached.architectures) >= {e.arch for e in coe.experts.values()}:
                print(f"cost profile: {path} (cached, unload mode {mode})")
                return path
        except ConfigError as exc:
            print(f"cost profile {path} not reusable ({exc}); measuring a new one")
    print("measuring a quick cost profile of this machine through Triton (once; cached in the repository) ...")
    result = run_profile(coe, repo, ("cpu",), Plan.quick(), triton_url=triton_url, command="coserve demo (quick profile)")
    write_profile(result, path)
    print(f"  wrote {path} in {result.seconds:.0f} s")
    return path
