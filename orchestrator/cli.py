"""The ``coserve`` command line (thin: parses arguments, calls the library, prints results)."""

from __future__ import annotations

import argparse
import importlib
import sys

from orchestrator.errors import CoserveError

#: Modules that each add their subcommands with ``register(subparsers)``. They must import cheaply
#: (no torch, no tritonclient at module level) so that ``coserve --help`` stays fast.
COMMAND_MODULES = (
    "orchestrator.cli_triton",  # triton start, repo list|status|load|unload
    "exporter.cli",  # coe generate, export, expert add
    "orchestrator.cli_simulate",  # simulate
    "orchestrator.cli_demo",  # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coserve", description="Collaboration-of-Experts serving on Triton")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CoserveError as exc:
        print(f"coserve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
