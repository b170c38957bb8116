"""``coserve triton start`` and ``coserve repo list|status|load|unload``.

Thin: parse, call the launcher/adapter, print. This module is imported on every ``coserve`` call,
so tritonclient, the adapter and the launcher are imported inside the handlers only.
Every user mistake (unknown model, server down, bad kind/count, missing repository) surfaces as a
``CoserveError``, which the root CLI prints as one line without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli_numbers import port, positive_int, positive_number
from orchestrator.errors import CoserveError, ModelLoadError

if TYPE_CHECKING:
    from orchestrator.triton.adapter import TritonAdapter
    from orchestrator.triton.model_config import ModelConfig

#: Triton's own default ports; ``triton start`` binds these unless told otherwise, so that
#: ``coserve repo ...`` (default ``--url localhost:8001``) finds it out of the box
DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, DEFAULT_METRICS_PORT = 8001, 8000, 8002
DEFAULT_URL = f"localhost:{DEFAULT_GRPC_PORT}"
DEFAULT_REPO = "./model_repository"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``triton`` and ``repo`` with their subcommands."""
    triton = subparsers.add_parser("triton", help="run the embedded Triton server")
    triton_sub = triton.add_subparsers(dest="triton_command", required=True, metavar="SUBCOMMAND")
    start = triton_sub.add_parser("start", help="start the embedded tritonserver in the foreground (Ctrl-C stops it)")
    start.add_argument("--repo", required=True, help="model repository directory")
    start.add_argument("--grpc-port", type=port, default=DEFAULT_GRPC_PORT, help=f"gRPC port (default {DEFAULT_GRPC_PORT}, what `coserve repo` uses)")
    start.add_argument("--http-port", type=port, default=DEFAULT_HTTP_PORT, help=f"HTTP port (default {DEFAULT_HTTP_PORT})")
    start.add_argument("--metrics-port", type=port, default=DEFAULT_METRICS_PORT, help=f"metrics port (default {DEFAULT_METRICS_PORT})")
    start.add_argument("--home", default=None, help="Triton home directory to assemble and keep (default: a temp dir)")
    start.add_argument("--start-timeout", type=positive_number, default=60.0, help="seconds to wait for readiness")
    start.set_defaults(func=_triton_start)

    # --url/--repo on every leaf, so they go after the subcommand as documented.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=DEFAULT_URL, help=f"Triton gRPC HOST:PORT (default {DEFAULT_URL})")
    common.add_argument("--repo", default=DEFAULT_REPO, help=f"model repository directory (default {DEFAULT_REPO})")

    repo = subparsers.add_parser("repo", help="manage a running Triton server's model repository")
    repo_sub = repo.add_subparsers(dest="repo_command", required=True, metavar="SUBCOMMAND")
    repo_sub.add_parser("list", parents=[common], help="list the server's models and their states").set_defaults(
        func=_repo_list
    )
    repo_sub.add_parser(
        "status", parents=[common], help="state of every model; instances of loaded ones"
    ).set_defaults(func=_repo_status)
    load = repo_sub.add_parser("load", parents=[common], help="load (or reload) a model")
    load.add_argument("name", metavar="NAME")
    load.add_argument("--kind", choices=["cpu", "gpu"], default=None, help="instance kind (default: as in config.pbtxt)")
    load.add_argument("--count", type=positive_int, default=None, help="instance count (default: as in config.pbtxt)")
    load.add_argument("--gpus", default=None, help="device ids for kind gpu, comma separated (e.g. 0,1)")
    load.set_defaults(func=_repo_load)
    unload = repo_sub.add_parser("unload", parents=[common], help="unload a model and wait until it is gone")
    unload.add_argument("name", metavar="NAME")
    unload.add_argument("--timeout", type=positive_number, default=30.0, help="seconds to wait until it is gone")
    unload.set_defaults(func=_repo_unload)


# -- triton start ------------------------------------------------------------------------------
def _triton_start(args: argparse.Namespace) -> int:
    from orchestrator.triton.launcher import EmbeddedTriton

    repo = Path(args.repo)
    if not repo.is_dir():
        raise CoserveError(f"model repository {repo} does not exist or is not a directory")
    if args.home is not None and Path(args.home).exists() and not Path(args.home).is_dir():
        raise CoserveError(f"--home {args.home}: exists and is not a directory")
    server = EmbeddedTriton(
        repo,
        home=args.home,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        start_timeout_s=args.start_timeout,
    )
    # SIGTERM arrives as KeyboardInterrupt (orchestrator.cli): the same orderly stop as Ctrl-C,
    # the normal way to end a foreground server, so it exits 0.
    try:
        server.start()
        print(
            f"Triton ready in {server.start_seconds:.2f} s: grpc {server.grpc_url}  http {server.http_url}  "
            f"metrics {server.metrics_url}\nrepository {server.model_repository} (explicit model control; "
            f"load with: coserve repo load NAME --url {server.grpc_url} --repo {repo})\n"
            f"log {server.log_path}\nCtrl-C stops the server.",
            flush=True,
        )
        while server.running():
            time.sleep(0.5)
        tail = server.log_tail()
        report = server.stop()
        print(
            f"coserve: error: {report.describe() if report else 'tritonserver exited'}; log tail:\n{tail}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("stopping Triton ...", flush=True)
        return 0
    finally:
        server.stop()


# -- repo ----------------------------------------------------------------------------------------
def _with_adapter(args: argparse.Namespace, body: Callable[[TritonAdapter], Awaitable[int]]) -> int:
    from orchestrator.triton.adapter import TritonAdapter

    async def run() -> int:
        adapter = TritonAdapter(args.url, request_timeout_s=30.0)
        try:
            return await body(adapter)
        finally:
            await adapter.close()

    return asyncio.run(run())


def _repo_list(args: argparse.Namespace) -> int:
    async def body(adapter: TritonAdapter) -> int:
        for entry in await adapter.index():
            print(f"{entry.name}\t{entry.state or 'NOT LOADED'}")
        return 0

    return _with_adapter(args, body)


def _repo_status(args: argparse.Namespace) -> int:
    from orchestrator.triton import processes

    async def body(adapter: TritonAdapter) -> int:
        entries = await adapter.index()
        if not entries:
            print(f"(no models in the repository of {args.url})")
            return 0
        # A server on this machine shows its model processes: Triton keeps a model whose process
        # died READY, so say what is true. Elsewhere the index is all there is.
        server_pid = processes.find_local_server(args.url)
        rows = [("MODEL", "VERSION", "STATE", "INSTANCES", "REASON")]
        for entry in entries:
            instances = ""
            state = entry.state or "NOT LOADED"
            if entry.state == "READY" and server_pid is not None:
                alive = processes.model_processes(server_pid, entry.name)
                if not alive:
                    state = "READY, process dead"
            if entry.state == "READY":
                config = await adapter.model_config(entry.name)
                instances = ", ".join(
                    f"{g.kind.removeprefix('KIND_').lower()} x{g.count}" + (f" gpus {list(g.gpus)}" if g.gpus else "")
                    for g in config.instance_groups
                )
            reason = " ".join(entry.reason.split())  # server reasons can span lines
            rows.append((entry.name, entry.version or "-", state, instances or "-", reason))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
        return 0

    return _with_adapter(args, body)


def _override(args: argparse.Namespace) -> ModelConfig | None:
    """The whole-config override for ``repo load``, or None to load the server's own config."""
    if args.kind is None and args.count is None and args.gpus is None:
        return None
    from orchestrator.triton.model_config import ModelConfig

    repo = Path(args.repo)
    if not repo.is_dir():
        raise CoserveError(f"model repository {repo} does not exist (give --repo DIR; it holds <NAME>/config.pbtxt)")
    model_dir = repo / args.name
    if not (model_dir / "config.pbtxt").is_file():
        raise CoserveError(f"no model {args.name!r} in repository {repo} (missing {model_dir / 'config.pbtxt'})")
    base = ModelConfig.read(model_dir)
    current = base.instance_groups[0]
    try:
        gpus = [int(g) for g in args.gpus.split(",") if g.strip()] if args.gpus else list(current.gpus)
    except ValueError:
        raise CoserveError(f"--gpus must be comma-separated device ids like 0,1, got {args.gpus!r}") from None
    kind = args.kind or current.kind
    if args.kind == "cpu" and args.gpus is None:
        gpus = []  # device ids of a GPU config do not carry over to kind cpu
    try:
        return base.with_instances(kind, args.count if args.count is not None else current.count, gpus)
    except ValueError as exc:
        raise CoserveError(f"cannot load {args.name!r}: {exc}") from None


def _repo_load(args: argparse.Namespace) -> int:
    from orchestrator.triton import processes
    from orchestrator.triton.adapter import check_grpc_url

    check_grpc_url(args.url)  # before --repo is read: a bad URL must not read as "no model NAME"
    override = _override(args)

    async def body(adapter: TritonAdapter) -> int:
        # Triton keeps a model whose process died READY, and a load with the config it runs is a
        # no-op: on a server of this machine such a model is reloaded with fresh instances.
        server_pid = processes.find_local_server(args.url)
        dead = (
            server_pid is not None
            and not processes.model_processes(server_pid, args.name)
            and any(e.name == args.name and e.state == "READY" for e in await adapter.index())
        )
        try:
            if dead:
                config = override or await adapter.model_config(args.name)
                result = await adapter.reload(args.name, config)
            else:
                result = await adapter.load(args.name, override)
        except ModelLoadError as exc:
            _explain_poll_failure(args, exc, server_pid)
            raise
        config = await adapter.model_config(args.name)
        groups = ", ".join(f"{g.kind.removeprefix('KIND_').lower()} x{g.count}" for g in config.instance_groups)
        how = "reloaded" if dead else "loaded"
        why = " (its model process had died)" if dead else ""
        print(f"{how} {args.name} in {result.seconds:.2f} s ({groups}){why}")
        return 0

    return _with_adapter(args, body)


def _server_repository(server_pid: int | None) -> Path | None:
    """The ``--model-repository`` of a tritonserver of this machine (None if unknown)."""
    from orchestrator.triton import processes

    if server_pid is None:
        return None
    flag = "--model-repository="
    for arg in processes.read_cmdline(server_pid):
        if arg.startswith(flag):
            return Path(arg[len(flag) :])
    return None


def _explain_poll_failure(args: argparse.Namespace, exc: ModelLoadError, server_pid: int | None) -> None:
    """Triton says only "failed to poll from model repository" for an unreadable config.pbtxt:
    where the repository is at hand (the local server's own, or --repo), raise the parse error
    that names the file and the problem; otherwise say where to look."""
    if "failed to poll from model repository" not in (exc.server_message or ""):
        return
    from orchestrator.triton.model_config import ModelConfig

    candidates = [r for r in (_server_repository(server_pid), Path(args.repo)) if r is not None]
    for repo in candidates:
        model_dir = repo / args.name
        if (model_dir / "config.pbtxt").is_file():
            ModelConfig.read(model_dir)  # raises ConfigError naming config.pbtxt and the problem
            return  # it parses here: Triton's own words are all there is
    raise CoserveError(
        f"{exc} (Triton says this when {args.name}/config.pbtxt in its repository cannot be read or "
        "parsed; give --repo DIR, the server's repository, to see the problem)"
    )


def _repo_unload(args: argparse.Namespace) -> int:
    async def body(adapter: TritonAdapter) -> int:
        result = await adapter.unload(args.name, timeout_s=args.timeout)
        # Over a URL the CLI cannot see the server's processes: the index is the confirmation.
        print(f"unloaded {args.name}: gone from the index after {result.index_seconds:.2f} s")
        return 0

    return _with_adapter(args, body)
