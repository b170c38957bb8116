"""``coserve verdicts --board ID``: a board's record from the verdict log (thin: parse, read, print).

The log is ``--log PATH`` or the one a serve config names (``--config SERVE.yaml``,
``verdict_log.path``, default ``verdicts.sqlite`` beside it). It is opened read-only, so this runs
beside a serving ``coserve serve``. ``--since`` keeps the records written at or after a time
(ISO 8601, UTC unless it says otherwise, or a duration ago: ``90s``, ``15m``, ``2h``, ``1d``).
``--json`` prints one JSON array of flat records (``LoggedVerdict.to_json``). Every record is
shown, ``error`` verdicts and the re-inspections after them included, oldest first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

from orchestrator.errors import ConfigError, CoserveError

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "verdicts",
        help="show a board's verdicts from the verdict log (experts, versions, model hashes, times)",
        description="Print every verdict the service logged for a board, oldest first: component, type, "
        "outcome, the experts that ran with their versions and model file hashes, and the times.",
    )
    p.add_argument("--board", required=True, help="board id")
    p.add_argument("--since", default=None,
                   help="only records written at or after this time: ISO 8601 (UTC unless given) or 90s/15m/2h/1d ago")
    p.add_argument("--json", action="store_true", help="print a JSON array of records")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--log", default=None, help="the verdict log (SQLite file)")
    where.add_argument("--config", default=None, help="the serve config whose verdict_log to read")
    p.set_defaults(func=_cmd_verdicts)


def parse_since(text: str, now: float | None = None) -> float:
    """``--since`` as Unix seconds (module doc); ``ConfigError`` naming the flag otherwise."""
    m = _AGO.match(text.strip())
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError("--since", text, "must be an ISO 8601 time (2026-12-01T16:00) or a duration ago "
                          "(90s, 15m, 2h, 1d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def log_path(args: argparse.Namespace) -> Path:
    if args.log is not None:
        return Path(args.log)
    from orchestrator.serve_file import load_serve_file

    spec = load_serve_file(args.config)
    if spec.verdict_log is None:
        raise CoserveError(f"{args.config}: verdict_log: the log is turned off in this config (enabled: false)")
    return spec.verdict_log.path


def _cmd_verdicts(args: argparse.Namespace) -> int:
    from orchestrator.verdicts.store import open_read_only

    since = parse_since(args.since) if args.since is not None else None
    path = log_path(args)
    store = open_read_only(path)
    try:
        records = store.records(args.board, since)
    finally:
        store.close()
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=1))
        return 0
    for line in format_records(args.board, path, records):
        print(line)
    return 0


def format_records(board: str, path: Path, records: Sequence[object]) -> list[str]:
    """The human-readable table (one row per record, an error's text on the line below)."""
    from orchestrator.verdicts.record import LoggedVerdict, iso_utc

    rows: list[LoggedVerdict] = [r for r in records if isinstance(r, LoggedVerdict)]
    if not rows:
        return [f"no verdicts for board {board!r} in {path}"]
    components = len({r.verdict.component_id for r in rows})
    out = [f"board {board}: {len(rows)} verdicts for {components} components (log {path})"]
    header = ("seq", "logged (UTC)", "component", "type", "outcome", "class", "queue ms", "compute ms",
              "switch ms", "experts (version, sha256)")
    table = [header]
    for r in rows:
        v = r.verdict
        experts = ", ".join(f"{e.expert}@{e.version} {(e.sha256 or '?')[:12]}" for e in r.experts) or "-"
        table.append((
            str(r.seq), iso_utc(r.logged_at), v.component_id, v.component_type, v.outcome,
            "-" if v.defect_class is None else str(v.defect_class),
            f"{v.queue_s * 1e3:.1f}", f"{v.compute_s * 1e3:.1f}", f"{v.switch_s * 1e3:.1f}", experts,
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    errors = {i + 1: r.verdict.error for i, r in enumerate(rows) if r.verdict.error}
    for i, row in enumerate(table):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
        if i in errors:
            out.append(f"    error: {errors[i]}")
    return out
