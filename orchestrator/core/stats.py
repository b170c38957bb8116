"""Counters the core keeps for reports (loads by tier, unloads, batches, prefetch, waits)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class CoreStats:
    loads_by_tier: dict[str, int] = field(default_factory=dict)
    initial_loads: int = 0
    unloads: int = 0
    batches: int = 0
    prefetch_loads: int = 0
    prefetch_hits: int = 0
    replacement_loads: int = 0
    rejected: int = 0
    withdrawn: int = 0  # requests whose caller gave up before their verdict
    footprint_evictions: int = 0  # experts evicted because a measured footprint was over budget
    max_wait_s: float = 0.0

    def reset(self) -> None:
        """Zero every counter in place (the driver starts measuring; the object stays shared)."""
        fresh = CoreStats()
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))
