"""Versions of one expert in a Triton model repository (filesystem only; no Triton, no torch).

Layout of one expert (``<repo>/<expert>/``)::

    config.pbtxt            one config for every version (Triton has one per model name)
    1/model.onnx            version 1
    2/model.onnx            version 2 (``coserve expert add --replace``, or a re-export)
    retired/3/model.onnx    a version taken back by ``coserve expert rollback``

A *live* version is a directory whose name is a positive integer and that holds ``model.onnx``;
the newest live version is the one the next load takes (the engine names it in the load's
``version_policy``, so a load never picks up a version that appears while it runs). Non-numeric
entries (``retired/``, a writer's temporary ``.incoming-*``) are not versions: Triton skips them
too (measured on 2.51: a model directory holding ``1``, ``2``, ``retired-3`` and ``.tmp-4`` loads
version 2 under the default policy). A new version's number is one above every number ever used,
live or retired, so a number always names one file's content (the verdict log relies on it).

A version appears atomically: its directory is written under a temporary name and renamed into
place (``exporter.repository``).
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_FILE = "model.onnx"
#: where rolled-back versions go, inside the expert's directory (not a version: not numeric)
RETIRED_DIR = "retired"


def _numbered(directory: Path) -> list[int]:
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out = []
    for name in names:
        if name.isdigit() and int(name) > 0 and (directory / name / MODEL_FILE).is_file():
            out.append(int(name))
    return sorted(out)


def live_versions(model_dir: str | Path) -> list[int]:
    """The expert's live versions, oldest first (empty when it has none, or no directory)."""
    return _numbered(Path(model_dir))


def retired_versions(model_dir: str | Path) -> list[int]:
    """Versions taken back by a rollback, oldest first."""
    return _numbered(Path(model_dir) / RETIRED_DIR)


def latest_version(model_dir: str | Path) -> int | None:
    """The newest live version (what the next load takes); None when there is none."""
    live = live_versions(model_dir)
    return live[-1] if live else None


def next_version(model_dir: str | Path) -> int:
    """The number a new version gets: one above every live or retired one (1 for a new expert)."""
    used = live_versions(model_dir) + retired_versions(model_dir)
    return max(used, default=0) + 1


def model_file(model_dir: str | Path, version: int | str | None = None) -> Path:
    """``<model_dir>/<version>/model.onnx``; ``version`` None: the newest live one (``1`` when
    there is none yet, the path a first export writes). A retired version's file is found in
    ``retired/`` when it is no longer live (a verdict of it may still be logged)."""
    d = Path(model_dir)
    if version is None:
        newest = latest_version(d)
        version = newest if newest is not None else 1
    path = d / str(version) / MODEL_FILE
    if not path.exists():
        retired = d / RETIRED_DIR / str(version) / MODEL_FILE
        if retired.exists():
            return retired
    return path
