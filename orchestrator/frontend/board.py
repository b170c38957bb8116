"""The board summary that ends an ``InspectBoard`` stream (a front-end type: the engine knows
nothing of streams), and the tally that builds it from the verdicts sent."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.engine.types import Verdict


@dataclass(frozen=True)
class BoardSummary:
    """Counts of the verdicts sent on one ``InspectBoard`` stream.

    ``components`` is the number of verdicts (every request gets exactly one); it equals
    ``passed + defects + detector_fails + errors``. ``wall_s``: seconds from the first request
    received to the last verdict sent (0 for an empty stream).
    """

    board_id: str
    components: int = 0
    passed: int = 0
    defects: int = 0
    detector_fails: int = 0
    errors: int = 0
    wall_s: float = 0.0


class BoardTally:
    """Accumulates the verdicts of one stream into a ``BoardSummary`` (not thread-safe; one per stream)."""

    _FIELD = {"pass": "passed", "defect": "defects", "fail": "detector_fails", "error": "errors"}

    def __init__(self) -> None:
        self.board_id = ""
        self.counts = dict.fromkeys(self._FIELD.values(), 0)
        self.first_request: float | None = None
        self.last_verdict: float | None = None

    def request(self, board_id: str, now: float) -> None:
        """Note a request received at ``now`` (the first one names the board and starts the clock)."""
        if self.first_request is None:
            self.first_request = now
            self.board_id = board_id

    def verdict(self, verdict: Verdict, now: float) -> None:
        """Count ``verdict``, sent at ``now``."""
        self.counts[self._FIELD[verdict.outcome]] += 1
        self.last_verdict = now

    def summary(self) -> BoardSummary:
        wall = 0.0
        if self.first_request is not None and self.last_verdict is not None:
            wall = max(0.0, self.last_verdict - self.first_request)
        return BoardSummary(
            board_id=self.board_id, components=sum(self.counts.values()), wall_s=wall, **self.counts
        )
