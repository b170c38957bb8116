"""How long a Triton call may take before it counts as failed, scaled to the expert.

One fixed 60 s deadline made a frozen server cost minutes per board; a frozen server is now caught
by the adapter's liveness probe within ~3 s, so these deadlines only bound a *live* server whose
model hangs. They are generous multiples of what was measured here (docs/triton.md: a 100 MB
expert loads in ~0.43 s and runs a batch of 8 in ~0.22 s; loads take up to 2x longer on a busy
2-core box): a fixed margin for process start-up plus a part proportional to the ONNX file.
Until a measured cost profile is at hand (``coserve profile``), file size is the only scale.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator import model_versions

#: seconds any load may take: process spawn, interpreter and onnxruntime import (~0.15 s measured)
LOAD_BASE_S = 10.0
#: extra seconds per MB of ONNX file (measured ~3 ms/MB of session creation; 15x margin)
LOAD_S_PER_MB = 0.05
#: seconds any inference may take: one gRPC round trip and scheduling
INFER_BASE_S = 5.0
#: extra seconds per MB of ONNX file per batch item (measured ~0.27 ms; ~7x margin)
INFER_S_PER_MB_ITEM = 0.002
#: seconds an unload may take until its process is gone (measured 1.1-1.4 s; 2 instances ~2.6 s)
UNLOAD_S = 10.0


def model_file_bytes(model_dir: str | Path, version: int | str | None = None) -> int:
    """Size of ``<model_dir>/<version>/model.onnx`` (default: the newest version; 0 when absent:
    the base deadlines still apply)."""
    try:
        return model_versions.model_file(model_dir, version).stat().st_size
    except OSError:
        return 0


def load_timeout_s(model_bytes: int) -> float:
    """Deadline of one load of an expert whose ONNX file has ``model_bytes``."""
    return LOAD_BASE_S + LOAD_S_PER_MB * model_bytes / 1e6


def infer_timeout_s(model_bytes: int, batch: int) -> float:
    """Deadline of one inference of ``batch`` items on an expert of ``model_bytes``."""
    return INFER_BASE_S + INFER_S_PER_MB_ITEM * max(1, batch) * model_bytes / 1e6
