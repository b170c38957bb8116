"""The ``verdict_log:`` block of a serve config (parsed here; ``orchestrator.serve_file`` calls it).

YAML (every key optional; paths are relative to the config file)::

    verdict_log:
      enabled: true               # false: no log, no retry lookup (verdicts are answered unrecorded)
      path: verdicts.sqlite       # default: verdicts.sqlite beside the serve config
      sync: normal                # normal: written to the OS before answering (survives kill -9
                                  # of coserve, not a power cut); full: fsync every group commit
                                  # (survives a power cut too; costs an fsync per answer)
      max_age_s: 2592000          # prune records older than this (30 days); null: keep for ever
      max_bytes: 1.0e9            # prune the oldest records beyond this many bytes; null: no limit
      prune_every_s: 60           # how often retention runs (and once at start)
      probe_every_s: 5            # while the log cannot be written: how often a write is tried
      usage_save_s: 30            # how often the learned usage probabilities are saved

Why ``normal`` by default: an fsync on the machines measured takes 0.25 to 4 ms (it varies with
the disk's load), over the 0.5 ms the log may add to an answer; a killed orchestrator loses
nothing either way (the WAL write is in the OS before the answer goes), only a power cut or a
kernel crash can lose the last answered records with ``normal``.

The log lives beside the config rather than in the model repository because a repository is often
shared or mounted read-only (a container), while the config is the deployment's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config_reader import Reader

DEFAULT_FILE = "verdicts.sqlite"
SYNC_MODES = ("full", "normal")
KEYS = {"enabled", "path", "sync", "max_age_s", "max_bytes", "prune_every_s", "probe_every_s", "usage_save_s"}


@dataclass(frozen=True)
class VerdictLogConfig:
    """Where and how verdicts are logged (module doc); ``None`` limits are "no limit"."""

    path: Path
    sync: str = "normal"
    max_age_s: float | None = 30 * 24 * 3600.0
    max_bytes: int | None = 1_000_000_000
    prune_every_s: float = 60.0
    usage_save_s: float = 30.0
    probe_every_s: float = 5.0


def parse_verdict_log(raw: Any, r: Reader, base: Path) -> VerdictLogConfig | None:
    """The ``verdict_log`` value (absent: ``{}``, i.e. the defaults) as a config, or ``None`` when
    ``enabled: false`` (or ``verdict_log: false``). Errors are ``ConfigError``s naming ``verdict_log.<key>``."""
    if raw is None:
        raw = {}
    if raw is False:  # ``verdict_log: false``, the short form of ``enabled: false``
        return None
    m: Mapping[str, Any] = r.mapping(raw, "verdict_log")
    r.unknown(m, KEYS, "verdict_log")
    if not r.boolean(m.get("enabled", True), "verdict_log.enabled"):
        return None
    path = Path(r.string(m["path"], "verdict_log.path")) if m.get("path") is not None else Path(DEFAULT_FILE)
    defaults = VerdictLogConfig(Path())

    def limit(key: str, default: float | None) -> float | None:
        if key not in m:
            return default
        return None if m[key] is None else r.number(m[key], f"verdict_log.{key}", positive=True)

    max_bytes = limit("max_bytes", defaults.max_bytes)
    return VerdictLogConfig(
        path=path if path.is_absolute() else base / path,
        sync=r.string(m.get("sync", defaults.sync), "verdict_log.sync", SYNC_MODES),
        max_age_s=limit("max_age_s", defaults.max_age_s),
        max_bytes=None if max_bytes is None else int(max_bytes),
        prune_every_s=r.number(m.get("prune_every_s", defaults.prune_every_s), "verdict_log.prune_every_s", positive=True),
        usage_save_s=r.number(m.get("usage_save_s", defaults.usage_save_s), "verdict_log.usage_save_s", positive=True),
        probe_every_s=r.number(
            m.get("probe_every_s", defaults.probe_every_s), "verdict_log.probe_every_s", positive=True
        ),
    )
