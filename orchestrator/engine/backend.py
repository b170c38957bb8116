"""The engine's one I/O seam: where experts are loaded, unloaded and run.

``TritonBackend`` (``orchestrator.engine.triton_backend``) is the production implementation;
``FakeBackend`` (``orchestrator.engine.fake_backend``) is timed by a cost profile and injects
faults, for the engine's unit tests. The engine never talks to Triton except through this.

Contract (every method is a coroutine; ``executor`` is a name from the serve config):

- ``load(executor, expert, tier)``: returns once the expert is ready on that executor, with the
  version it loaded (a string; ``None`` where the backend cannot tell); raises a
  ``CoserveError`` when the load failed (``ServerUnavailableError`` when its server is lost).
  ``tier`` is where the core expects it to come from ("disk", or "cpu": a copy from host memory);
  Triton has no host-copy tier (instances do not share weights), so the Triton backend loads from
  the repository either way and says so (docs/engine.md).
- ``reload(executor, expert)``: the same, forcing fresh instances (the recovery for a model whose
  process died; see ``orchestrator.triton.adapter.TritonAdapter.reload``).
- ``unload(executor, expert)``: returns only once the expert's memory is free.
- ``infer(executor, expert, images)``: one batch (N x C x H x W float32) -> the expert's outputs
  (name -> array, batch axis first); raises ``CoserveError`` on failure.
- ``close()``: releases connections (not servers: their owner stops them).
- optional ``latest_versions(experts)``: expert -> the newest version on disk now (what the next
  load of it would take); an expert without one is left out. The engine polls it to replace held
  copies when a new version appears (``Engine.check_versions``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Backend(Protocol):
    async def load(self, executor: str, expert: str, tier: str = "disk") -> str | None: ...

    async def reload(self, executor: str, expert: str) -> None: ...

    async def unload(self, executor: str, expert: str) -> None: ...

    async def infer(self, executor: str, expert: str, images: np.ndarray) -> dict[str, np.ndarray]: ...

    async def close(self) -> None: ...
