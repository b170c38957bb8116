"""A minimal ``InspectionService`` for tests and benchmarks of what wraps a service (metrics,
verdict log): one component type ``t`` of 1x1x1 images, always serving, no engine behind it.
Subclasses say what ``inspect`` does."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.engine.types import EngineStatus, InspectRequest, Verdict


class StubService:
    def serving(self) -> bool:
        return True

    def component_types(self) -> Sequence[str]:
        return ["t"]

    def input_shape(self, component_type: str) -> tuple[int, int, int]:
        return (1, 1, 1)

    def status(self) -> EngineStatus:
        return EngineStatus("p", True)

    async def inspect(self, request: InspectRequest) -> Verdict:
        raise NotImplementedError
