"""Command-line output files, checked before anything runs (as ``orchestrator.cli_numbers`` does
for numbers).

A command that writes its result at the end (``profile --out`` after minutes of measuring,
``bench --json``/``--plot`` after every policy ran, ``plan --out`` after the search) refuses a
path that cannot be a file before it starts, with argparse's usage line and exit code 2::

    coserve profile: error: argument --out: /tmp/out is a directory, not a file

Missing parent directories are fine (the writers create them); a parent that is a file is not.
What only the write itself can tell (permissions, a full disk) stays the writer's error.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def output_file(text: str) -> str:
    """An argparse type: a path a file can be written at (the text, unchanged)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a file path, got {text!r}")
    path = Path(text)
    try:
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: {parent} is not a directory")
    except OSError as exc:  # a name too long, a folder that may not be searched
        raise argparse.ArgumentTypeError(f"{text}: {exc.strerror or exc}") from None
    return text

