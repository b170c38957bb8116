"""One real embedded tritonserver for the whole integration session.

Models live in a session repository (``triton_repo``); tests that need their own models write
them there (a load reads the repository at load time). Tests that must own a server (start/stop
behaviour) start their own ``EmbeddedTriton``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orchestrator.coe import CoEDefinition
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton
from tests.integration import factories

T = TypeVar("T")

#: models every test may use (each test loads what it needs and unloads it again)
BASE_MODELS = {"cls_a": 0, "cls_b": 1}


@pytest.fixture(scope="session")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("model_repository")
    for name, seed in BASE_MODELS.items():
        factories.write_model(repo, name, factories.make_classifier_onnx(seed=seed))
    return repo


@pytest.fixture(scope="session")
def triton(triton_repo: Path) -> Iterator[EmbeddedTriton]:
    server = EmbeddedTriton(triton_repo, start_timeout_s=60)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def arun(triton: EmbeddedTriton) -> Callable[[Callable[[TritonAdapter], Awaitable[T]]], T]:
    """Run ``body(adapter)`` in a fresh event loop with an adapter on the session server.

    The adapter has the launcher's process probe, so its unloads wait for the processes to exit.
    """

    def run(body: Callable[[TritonAdapter], Awaitable[T]]) -> T:
        async def main() -> T:
            adapter = TritonAdapter(triton.grpc_url, process_probe=triton.process_probe())
            try:
                return await body(adapter)
            finally:
                await adapter.close()

        return asyncio.run(main())

    return run


@pytest.fixture
def unload_all(triton: EmbeddedTriton, arun: Any) -> Iterator[None]:
    """Leave the session server with nothing loaded after the test (tests stay independent)."""
    yield

    async def body(adapter: TritonAdapter) -> None:
        for entry in await adapter.index():
            if entry.state in ("READY", "LOADING", "UNLOADING"):
                await adapter.unload(entry.name, timeout_s=30)

    arun(body)


@pytest.fixture(scope="session")
def tiny_board(tmp_path_factory: pytest.TempPathFactory) -> tuple[CoEDefinition, Path]:
    """A tiny exported demo CoE (4 classifiers, 1 shared detector, 40 components, 32x32 images)."""
    from exporter.build import export_coe
    from exporter.generate import generate, preset_options

    coe = generate(
        preset_options(
            "demo", types=4, detectors=1, detector_share=0.5, components=40,
            classifier_mb=0.5, detector_mb=1.0, image_size=32,
        )
    )
    repo = tmp_path_factory.mktemp("demo_repo")
    export_coe(coe, repo, jobs=1)
    return coe, repo


@pytest.fixture(scope="session")
def tiny_profile(tiny_board: tuple[CoEDefinition, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick cost profile of the tiny board measured on this machine (written once per session)."""
    from profiler.measure import Plan
    from profiler.run import run_profile, write_profile

    coe, repo = tiny_board
    path = tmp_path_factory.mktemp("profile") / "profile.yaml"
    write_profile(run_profile(coe, repo, ("cpu",), Plan.quick(), command="tests: tiny_profile"), path)
    return path


@pytest.fixture(scope="session")
def tiny_coe_file(tiny_board: tuple[CoEDefinition, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from orchestrator.coe import dump_coe

    path = tmp_path_factory.mktemp("coe") / "coe.yaml"
    dump_coe(tiny_board[0], path)
    return path
