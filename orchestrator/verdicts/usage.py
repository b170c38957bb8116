"""Learned usage probabilities across restarts: restore at start, save while serving and at stop.

The core learns the board mix online (feature ``online_probabilities``: decayed counts in
``DependencyGraph``); its pure ``usage_snapshot``/``restore_usage`` turn that into plain data and
back. ``UsageKeeper`` keeps it in the verdict log's ``usage`` table, keyed by the CoE's name:
restored before the engine's initial placement, so a warm restart places experts by the mix the
last run learned rather than by the prior; saved every ``save_every_s`` (a killed process loses
at most that much learning) and once more at stop. A graph that does not learn online is neither
restored nor saved (its probabilities are the prior; saving would overwrite a learned snapshot).
"""

from __future__ import annotations

import asyncio

from orchestrator.aio import cancel_and_wait
from orchestrator.core.graph import DependencyGraph
from orchestrator.verdicts.store import VerdictStore


class UsageKeeper:
    def __init__(self, graph: DependencyGraph, store: VerdictStore, coe: str, save_every_s: float = 30.0) -> None:
        self.graph = graph
        self.store = store
        self.coe = coe
        self.save_every_s = save_every_s
        self._task: asyncio.Task[None] | None = None

    def restore(self) -> str:
        """Load the saved snapshot into the graph; one line saying what happened."""
        if not self.graph.online:
            return "usage probabilities: the prior (online_probabilities is off), nothing restored"
        snapshot = self.store.load_usage(self.coe)
        if snapshot is None:
            return f"usage probabilities: no saved snapshot for {self.coe} in {self.store.path}; starting from the prior"
        try:
            self.graph.restore_usage(snapshot)
        except ValueError as exc:
            return f"usage probabilities: saved snapshot ignored ({exc}); starting from the prior"
        return (f"usage probabilities: restored from {self.store.path} "
                f"({snapshot.get('requests', 0):.0f} decayed requests observed before)")

    def save(self) -> None:
        if self.graph.online:
            self.store.save_usage(self.coe, self.graph.usage_snapshot())

    def start(self) -> None:
        """Save periodically from now on (on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._every(), name="coserve-usage-save")

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.save_every_s)
            self.save()

    async def stop(self) -> None:
        """Stop the periodic save and save once more."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.save()
