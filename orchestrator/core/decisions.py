"""Decisions the core returns to its driver, as plain immutable data.

The driver executes them in list order: ``Unload`` (then report ``on_unload_done`` once the memory
is really free), ``Load`` (report ``on_load_done``), ``Dispatch`` (run the batch, report
``on_batch_done`` with the classifier verdicts), ``Reject`` and ``Complete`` (answer the client).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    """Load ``expert`` into ``executor``'s pool from ``tier`` ("disk" or "cpu" memory)."""

    executor: str
    expert: str
    tier: str
    bytes: int
    prefetch: bool = False


@dataclass(frozen=True)
class Unload:
    """Unload ``expert`` from ``executor``; the driver confirms once the memory is free."""

    executor: str
    expert: str
    reason: str


@dataclass(frozen=True)
class Dispatch:
    """Run one batch: ``request_ids`` through ``expert`` on ``executor``.

    ``stage`` is 0 for the preliminary (classifier) step and 1 for the subsequent (detector) step.
    """

    batch_id: int
    executor: str
    expert: str
    request_ids: tuple[int, ...]
    stage: int


@dataclass(frozen=True)
class Reject:
    """The request cannot be served; ``reason`` says why."""

    request_id: int
    reason: str


@dataclass(frozen=True)
class Complete:
    """Every step the request needs has finished."""

    request_id: int


Decision = Load | Unload | Dispatch | Reject | Complete
