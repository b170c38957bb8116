"""A ``Backend`` timed by a cost profile, with fault injection: the engine's unit-test seam.

Hardware model (the simulator's, ``orchestrator.simulate.engine``): a load from disk waits for
one of the box's ``storage.concurrent_loads`` channels and takes ``load_time_s[tier]``; a copy from
CPU memory goes through the processor kind's own channels; an unload takes ``unload_time_s``; a
batch of n takes ``K * n + B``. Waiting is ``asyncio.sleep``, so on a virtual-clock event loop the
engine sees exactly the simulator's timings.

Outputs follow the tensor contract (``orchestrator.experts_io``) and are a pure function of the
images: a classifier says "no defect" for an image whose mean is below 0.5 (else defect class 1);
a detector passes an image whose mean is below 0.25. Tests choose verdicts by choosing images.

It also checks the engine: two operations at once on one expert of one executor, or an inference
on an expert that is not loaded, are recorded in ``violations``.

Versions: ``disk_versions`` (expert -> the newest version "on disk", "1" by default) is what a
load takes when it starts and what ``latest_versions`` answers; a test installs a new version by
setting it. ``log`` entries of inferences carry the version that ran (``infer_versions``).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from orchestrator import experts_io
from orchestrator.coe import CoEDefinition
from orchestrator.core.coe_graph import profile_arch
from orchestrator.core.profile import ArchCost, CostProfile
from orchestrator.errors import InferenceError, ModelLoadError, ServerUnavailableError


class Timeline:
    """``sleep`` whose wake-ups at one instant come in the order the sleeps began.

    asyncio orders timers of equal deadline arbitrarily; the simulator orders events of one instant
    by when they were scheduled. With this, operations that end together are reported to the
    engine in the order they started, so both drivers hand the core ties in the same order.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        when = loop.time() + max(0.0, seconds)
        heapq.heappush(self._heap, (when, self._seq, future))
        loop.call_at(when, self._fire, when)
        await future

    def _fire(self, when: float) -> None:
        # ``when``, not the loop's clock: asyncio runs a timer up to one clock resolution early
        while self._heap and self._heap[0][0] <= when:
            _, _, future = heapq.heappop(self._heap)
            if not future.done():
                future.set_result(None)


@dataclass
class Faults:
    """What to break. Counts go down as faults fire."""

    fail_loads: dict[str, int] = field(default_factory=dict)  # expert -> loads that fail
    dead_process_infers: dict[str, int] = field(default_factory=dict)  # expert -> "not healthy" answers
    fail_infers: dict[str, int] = field(default_factory=dict)  # expert -> other inference errors
    unavailable: bool = False  # every call: the server cannot be reached


class FakeBackend:
    def __init__(
        self, coe: CoEDefinition, profile: CostProfile, executor_kinds: Mapping[str, str], faults: Faults | None = None
    ) -> None:
        self.coe, self.profile, self.kinds = coe, profile, dict(executor_kinds)
        self.faults = faults or Faults()
        self._time = Timeline()
        self._storage = asyncio.Semaphore(profile.storage_concurrent_loads)
        self._links = {k: asyncio.Semaphore(profile.processor(k).concurrent_loads) for k in set(self.kinds.values())}
        self.loaded: set[tuple[str, str]] = set()
        self._busy: set[tuple[str, str]] = set()
        self.log: list[tuple[str, str, str]] = []  # (op, executor, expert), in order
        self.violations: list[str] = []
        self.max_concurrent_loads = 0
        self._loading = 0
        self.disk_versions: dict[str, str] = {}
        self.loaded_version: dict[tuple[str, str], str] = {}
        #: (executor, expert, version) of every inference, in order
        self.infer_versions: list[tuple[str, str, str]] = []

    def _cost(self, executor: str, expert: str) -> ArchCost:
        cost = self.profile.cost(profile_arch(self.profile, self.coe.experts[expert].arch), self.kinds[executor])
        assert cost is not None, f"no cost for {expert} on {executor}"
        return cost

    def _enter(self, op: str, executor: str, expert: str) -> None:
        if self.faults.unavailable:
            raise ServerUnavailableError(f"Triton server of {executor} is not reachable", "fake: failed to connect")
        key = (executor, expert)
        if key in self._busy:
            self.violations.append(f"{op} of {expert} on {executor} while another operation on it runs")
        self._busy.add(key)
        self.log.append((op, executor, expert))

    def _leave(self, executor: str, expert: str) -> None:
        self._busy.discard((executor, expert))

    async def load(self, executor: str, expert: str, tier: str = "disk") -> str:
        self._enter("load", executor, expert)
        version = self.disk_versions.get(expert, "1")  # resolved when the load starts, as on Triton
        try:
            channel = self._storage if tier == "disk" else self._links[self.kinds[executor]]
            async with channel:
                self._loading += 1
                self.max_concurrent_loads = max(self.max_concurrent_loads, self._loading)
                try:
                    cost = self._cost(executor, expert)
                    await self._time.sleep(cost.load_time_s.get(tier, cost.load_time_s["disk"]))
                finally:
                    self._loading -= 1
            if self.faults.fail_loads.get(expert, 0) > 0:
                self.faults.fail_loads[expert] -= 1
                raise ModelLoadError(f"cannot load {expert!r}", "fake: INVALID_ARGUMENT corrupt model")
            self.loaded.add((executor, expert))
            self.loaded_version[(executor, expert)] = version
        finally:
            self._leave(executor, expert)
        return version

    async def reload(self, executor: str, expert: str) -> None:
        version = self.loaded_version.get((executor, expert))
        self.loaded.discard((executor, expert))
        await self.load(executor, expert)
        if version is not None:  # a reload brings back the version that ran, not a newer one
            self.loaded_version[(executor, expert)] = version

    async def latest_versions(self, experts: list[str]) -> dict[str, str]:
        return {e: self.disk_versions.get(e, "1") for e in experts}

    async def unload(self, executor: str, expert: str) -> None:
        self._enter("unload", executor, expert)
        try:
            await self._time.sleep(self.profile.processor(self.kinds[executor]).unload_time_s)
            self.loaded.discard((executor, expert))
            self.loaded_version.pop((executor, expert), None)
        finally:
            self._leave(executor, expert)

    async def infer(self, executor: str, expert: str, images: np.ndarray) -> dict[str, np.ndarray]:
        if self.faults.unavailable:
            raise ServerUnavailableError(f"Triton server of {executor} is not reachable", "fake: failed to connect")
        if (executor, expert) not in self.loaded:
            self.violations.append(f"inference on {expert} on {executor}, which is not loaded")
        self.log.append(("infer", executor, expert))
        self.infer_versions.append((executor, expert, self.loaded_version.get((executor, expert), "?")))
        await self._time.sleep(self._cost(executor, expert).batch_time_s(len(images)))
        if self.faults.dead_process_infers.get(expert, 0) > 0:
            self.faults.dead_process_infers[expert] -= 1
            raise InferenceError(f"inference on {expert!r} failed", f"Stub process '{expert}_0_0' is not healthy.")
        if self.faults.fail_infers.get(expert, 0) > 0:
            self.faults.fail_infers[expert] -= 1
            raise InferenceError(f"inference on {expert!r} failed", "fake: bad input")
        return outputs_for(self.coe.experts[expert].arch, images)

    async def close(self) -> None:
        return None


def outputs_for(arch: str, images: np.ndarray) -> dict[str, np.ndarray]:
    """The fake expert's outputs for a batch (see the module doc for the rule)."""
    means = images.reshape(len(images), -1).mean(axis=1)
    n = len(images)
    if arch == "detector":
        _, h, w = images.shape[1:]
        passed = means < 0.25
        boxes = np.zeros((n, 1, 4), dtype=np.float32)
        boxes[:, 0] = [w / 2 - 4, h / 2 - 4, w / 2 + 4, h / 2 + 4]
        objectness = np.where(passed, 0.9, 0.1).astype(np.float32).reshape(n, 1)
        return {"boxes": boxes, "objectness": objectness, "class_logits": np.zeros((n, 1, 2), np.float32)}
    logits = np.zeros((n, 4), dtype=np.float32)
    logits[:, experts_io.NO_DEFECT_CLASS] = np.where(means < 0.5, 3.0, -3.0)
    logits[:, 1] = np.where(means < 0.5, -3.0, 3.0)
    return {experts_io.CLASSIFIER_OUTPUT: logits}
