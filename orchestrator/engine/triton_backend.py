"""The production ``Backend``: executors on Triton servers, through the adapter.

Mapping (docs/engine.md): **one executor per Triton server**. Triton has one config, hence one
instance group, per model name, while the core may hold one expert in two executors' pools at
once; on separate servers that is simply two loads of one name. It also makes an executor's
memory measurable: what its server and that server's model processes hold. A CPU executor's
experts load as KIND_CPU, a GPU executor's as KIND_GPU on its device ids, through the whole-config
override the adapter sends (the repository's config.pbtxt with its instance group replaced).

Triton has no host-copy tier (instances do not share weights), so a ``Load`` the core planned
from "cpu" memory is a load from the repository here; simulated numbers of policies that rely on
that tier (the Samba baselines' CPU cache) are labelled as such in reports.

Loads wait for one of ``concurrent_loads`` channels, shared by every executor of the backend (the
cost profile's ``storage.concurrent_loads``: what this box runs in parallel, measured by
``coserve profile``), as the simulator models them. That also keeps an embedded server below
its 4 model-load threads: a load queued inside Triton would spawn no process, which the
adapter's process watch could not tell from one that died.

Versions (``orchestrator.model_versions``): every load names the newest live version on disk
when it starts (``version_policy: specific``), so what it returns is exactly what runs; a reload
(dead process) keeps the version that ran. ``latest_versions`` reads the repository on a worker
thread for the engine's watch. Where the repository is not visible here (an external server's own
volume), loads name no version and return ``None`` (Triton takes its newest).

``reconnect(server, url)`` points a restarted server's adapters at it (the watchdog's restart,
``orchestrator.triton.launcher.EmbeddedServerControl``).

Deadlines scale with the expert (``orchestrator.triton.deadlines``); a server that stops
answering is caught by the adapter's liveness probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator import experts_io, model_versions
from orchestrator.engine.types import ServerStatus
from orchestrator.errors import CoserveError
from orchestrator.triton import deadlines
from orchestrator.triton.adapter import TritonAdapter, model_process_died
from orchestrator.triton.model_config import ModelConfig


@dataclass(frozen=True)
class ExecutorTarget:
    """Where one executor's experts run: its server's adapter, the instance kind, GPU ids."""

    server: str
    adapter: TritonAdapter
    kind: str  # "cpu" | "gpu"
    gpus: Sequence[int] = ()


class TritonBackend:
    def __init__(self, repo: str | Path, targets: Mapping[str, ExecutorTarget], concurrent_loads: int = 2) -> None:
        adapters = [t.adapter for t in targets.values()]
        if len({id(a) for a in adapters}) != len(adapters):
            raise ValueError("each executor needs its own Triton server (see the module doc)")
        self.repo = Path(repo)
        self.targets = dict(targets)
        self._configs: dict[tuple[str, str], ModelConfig] = {}
        self._bytes: dict[str, int] = {}
        self._loaded: dict[tuple[str, str], int] = {}  # (executor, expert) -> version loaded
        self.load_retries = 0  # loads retried after the model process died during the first
        self._channels = asyncio.Semaphore(max(1, min(concurrent_loads, 3)))
        #: server -> how its memory is accounted where the shell measures it otherwise than its
        #: processes or the profile (``"profile+gpu-metrics"``: ``GpuMemoryWatch``)
        self.accounting: dict[str, str] = {}

    def server_of(self, executor: str) -> str:
        return self.targets[executor].server

    def servers(self) -> list[ServerStatus]:
        """One entry per server: its URL, whether coserve started it (then memory is measured
        from its processes) or not (an external server: memory is accounted from the cost
        profile, since its processes cannot be seen), and whether it answers."""
        return [
            ServerStatus(
                name=t.server,
                url=t.adapter.url,
                embedded=t.adapter.process_probe is not None,
                healthy=t.adapter.unresponsive is None,
                accounting=self.accounting.get(
                    t.server, "measured" if t.adapter.process_probe is not None else "profile"
                ),
            )
            for t in self.targets.values()
        ]

    def _config(self, executor: str, expert: str) -> ModelConfig:
        key = (executor, expert)
        if key not in self._configs:
            t = self.targets[executor]
            self._configs[key] = ModelConfig.read(self.repo / expert).with_instances(t.kind, 1, list(t.gpus))
        return self._configs[key]

    def _file_bytes(self, expert: str) -> int:
        if expert not in self._bytes:
            self._bytes[expert] = deadlines.model_file_bytes(self.repo / expert)
        return self._bytes[expert]

    def _versioned(self, executor: str, expert: str, version: int | None) -> ModelConfig:
        config = self._config(executor, expert)
        return config if version is None else config.with_version(version)

    async def load(self, executor: str, expert: str, tier: str = "disk") -> str | None:
        """Load the newest version on disk (module doc) and return it. Load once more if the
        first load's model process died after its handshake (Triton answers "not healthy" then,
        and a second load works; docs/triton.md)."""
        version = model_versions.latest_version(self.repo / expert)
        timeout = deadlines.load_timeout_s(self._file_bytes(expert))
        adapter = self.targets[executor].adapter
        config = self._versioned(executor, expert, version)
        async with self._channels:
            try:
                await adapter.load(expert, config, timeout_s=timeout)
            except CoserveError as exc:
                if not model_process_died(exc):
                    raise
                self.load_retries += 1
                await adapter.load(expert, config, timeout_s=timeout)
        if version is None:
            self._loaded.pop((executor, expert), None)
            return None
        self._loaded[(executor, expert)] = version
        return str(version)

    async def reload(self, executor: str, expert: str) -> None:
        timeout = deadlines.load_timeout_s(self._file_bytes(expert))
        config = self._versioned(executor, expert, self._loaded.get((executor, expert)))
        async with self._channels:
            await self.targets[executor].adapter.reload(expert, config, timeout_s=timeout)

    async def unload(self, executor: str, expert: str) -> None:
        await self.targets[executor].adapter.unload(expert, timeout_s=deadlines.UNLOAD_S)
        self._loaded.pop((executor, expert), None)

    async def latest_versions(self, experts: Sequence[str]) -> dict[str, str]:
        """Expert -> its newest live version on disk (experts without one are left out)."""

        def scan() -> dict[str, str]:
            found = {e: model_versions.latest_version(self.repo / e) for e in experts}
            return {e: str(v) for e, v in found.items() if v is not None}

        return await asyncio.to_thread(scan)

    async def infer(self, executor: str, expert: str, images: np.ndarray) -> dict[str, np.ndarray]:
        timeout = deadlines.infer_timeout_s(self._file_bytes(expert), len(images))
        return await self.targets[executor].adapter.infer(
            expert, {experts_io.INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)}, timeout_s=timeout
        )

    async def reconnect(self, server: str, url: str) -> None:
        """The server named ``server`` was restarted and answers at ``url``: its executors'
        adapters talk to it from now on (``TritonAdapter.reconnect``; the watchdog's restart)."""
        for t in self.targets.values():
            if t.server == server:
                await t.adapter.reconnect(url)

    async def close(self) -> None:
        for t in self.targets.values():
            await t.adapter.close()
