"""The ``coserve`` command line (thin: parses arguments, calls the library, prints results)."""

from __future__ import annotations

import argparse
import sys

from orchestrator.errors import CoserveError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coserve", description="Collaboration-of-Experts serving on Triton")
    parser.add_subparsers(dest="command", required=True)
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
