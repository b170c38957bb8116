"""What one log record holds, and its conversions (pure: no I/O).

A record is a ``Verdict`` as it was answered, plus what makes it traceable: the wall-clock time it
was written (``logged_at``, Unix seconds, UTC) and, per expert that ran, the SHA-256 of the model
file of the version that ran (``ModelHashes``; ``None`` where it could not be known).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.engine.types import ExpertUse, Verdict


@dataclass(frozen=True)
class LoggedExpert:
    expert: str
    version: str
    sha256: str | None


@dataclass(frozen=True)
class LoggedVerdict:
    """One row of the log: ``seq`` orders records (increasing in write order)."""

    seq: int
    logged_at: float
    verdict: Verdict
    experts: Sequence[LoggedExpert]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (``coserve verdicts --json``): one flat object per record."""
        v = self.verdict
        return {
            "seq": self.seq,
            "logged_at": iso_utc(self.logged_at),
            "logged_at_unix": self.logged_at,
            "board_id": v.board_id,
            "component_id": v.component_id,
            "component_type": v.component_type,
            "outcome": v.outcome,
            "defect_class": v.defect_class,
            "scores": list(v.scores),
            "experts": [{"expert": e.expert, "version": e.version, "sha256": e.sha256} for e in self.experts],
            "queue_s": v.queue_s,
            "compute_s": v.compute_s,
            "switch_s": v.switch_s,
            "error": v.error,
        }


def iso_utc(unix_s: float) -> str:
    """``unix_s`` as ISO 8601 in UTC, to the millisecond (``2026-12-01T16:13:20.123Z``)."""
    return dt.datetime.fromtimestamp(unix_s, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def experts_json(experts: Sequence[LoggedExpert]) -> str:
    return json.dumps([[e.expert, e.version, e.sha256] for e in experts], separators=(",", ":"))


def experts_from_json(text: str) -> tuple[LoggedExpert, ...]:
    return tuple(LoggedExpert(str(e), str(v), None if h is None else str(h)) for e, v, h in json.loads(text))


def verdict_row(verdict: Verdict, experts: Sequence[LoggedExpert], logged_at: float) -> tuple[Any, ...]:
    """The column values of ``INSERT`` (``store.COLUMNS`` order)."""
    v = verdict
    return (
        v.board_id, v.component_id, v.component_type, v.outcome, v.defect_class,
        json.dumps([float(s) for s in v.scores], separators=(",", ":")), experts_json(experts),
        float(v.queue_s), float(v.compute_s), float(v.switch_s), v.error, logged_at,
    )


def from_row(row: Mapping[str, Any] | Sequence[Any]) -> LoggedVerdict:
    """A record from a ``SELECT seq, <COLUMNS>`` row."""
    (seq, board, component, ctype, outcome, defect_class, scores, experts, queue_s, compute_s, switch_s,
     error, logged_at) = tuple(row)  # type: ignore[arg-type]
    logged = experts_from_json(experts)
    verdict = Verdict(
        board_id=board, component_id=component, component_type=ctype, outcome=outcome,
        defect_class=defect_class, scores=tuple(json.loads(scores)),
        experts=tuple(ExpertUse(e.expert, e.version) for e in logged),
        queue_s=queue_s, compute_s=compute_s, switch_s=switch_s, error=error,
    )
    return LoggedVerdict(int(seq), float(logged_at), verdict, logged)
