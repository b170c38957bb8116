"""Writing a benchmark's result: one JSON object in ``benchmarks/results/`` (or ``--out``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_result(out: str | Path, result: dict[str, Any], indent: int = 2) -> Path:
    """Write ``result`` to ``out`` as JSON (its folder made if missing) and say so."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=indent) + "\n")
    print(f"wrote {path}")
    return path
