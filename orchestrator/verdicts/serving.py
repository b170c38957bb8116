"""The verdict log in ``coserve serve`` (what ``orchestrator.serve.run_service`` calls).

``VerdictLog.open(config, repo)`` opens the store before any server starts (a log that cannot be
opened stops the service with an error naming the file: it would otherwise answer unrecorded);
``attach(engine)`` restores the learned usage probabilities into the engine's graph (before its
initial placement) and returns the ``RecordedService`` the front end serves; ``aclose()``, after
the engine has drained and closed, saves the usage once more and closes the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orchestrator.core.graph import DependencyGraph
from orchestrator.engine.types import InspectionService
from orchestrator.verdicts.config import VerdictLogConfig
from orchestrator.verdicts.hashes import ModelHashes
from orchestrator.verdicts.service import RecordedService
from orchestrator.verdicts.store import VerdictStore
from orchestrator.verdicts.usage import UsageKeeper


class VerdictLog:
    def __init__(self, store: VerdictStore, config: VerdictLogConfig) -> None:
        self.store = store
        self.config = config
        self.service: RecordedService | None = None
        self.usage: UsageKeeper | None = None

    @classmethod
    def open(cls, config: VerdictLogConfig, repo: Path | None) -> VerdictLog:
        """Open (create) the log; ``LogOpenError`` naming the file if impossible."""
        store = VerdictStore(
            config.path, sync=config.sync, max_age_s=config.max_age_s, max_bytes=config.max_bytes,
            prune_every_s=config.prune_every_s, retry_s=config.probe_every_s, hashes=ModelHashes(repo),
        )
        store.start()
        return cls(store, config)

    def attach(
        self, engine: InspectionService, graph: DependencyGraph, coe_name: str,
        say: Callable[[str], None] = lambda _: None,
    ) -> RecordedService:
        """Restore ``graph``'s learned usage (the engine's, before ``engine.start``), save it from
        now on, and wrap ``engine``; call on the serving loop."""
        self.usage = UsageKeeper(graph, self.store, coe_name, self.config.usage_save_s)
        say(self.usage.restore())
        self.usage.start()
        self.service = RecordedService(engine, self.store)
        say(f"verdict log: {self.store.path} ({self.store.health().records} records, sync {self.store.sync})")
        return self.service

    async def aclose(self) -> None:
        if self.usage is not None:
            await self.usage.stop()
        await self.store.aclose()
