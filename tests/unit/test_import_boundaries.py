"""The architecture's seams, checked on the source: who may import what.

- only the Triton seam (``orchestrator/triton/adapter.py``, plus ``model_config.py`` for Triton's
  protobuf schema) imports ``tritonclient``;
- only the exporter (and the profiler, which will drive it) imports ``torch``;
- only the front end (``orchestrator/frontend/``) and the typed client (``orchestrator/client.py``)
  import ``grpc``, ``grpc_health`` and ``grpc_reflection``; ``grpc_tools`` only the generator;
  ``google.protobuf`` only they and ``model_config.py`` (Triton's protobuf schema);
- the engine, core, simulator and Triton seam never import the front end or the client (the
  front end depends on the engine's types, not the other way round), and the front end sees of
  the engine only ``orchestrator.engine.types`` (the contract a fake engine can implement too);
- the orchestrator's library never imports the exporter (``cli_demo.py`` is shell code that
  composes both, lazily);
- the pure core and the simulator import no clock, I/O, networking or async module.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "exporter", "profiler")


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _violations(allowed: Callable[[str], bool], module_prefix: str) -> list[str]:
    bad = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for line, name in _imports(path):
            if (name == module_prefix or name.startswith(module_prefix + ".")) and not allowed(rel):
                bad.append(f"{rel}:{line} imports {name}")
    return bad


def _front_end(rel: str) -> bool:
    return rel.startswith("orchestrator/frontend/") or rel == "orchestrator/client.py"


def test_sources_found() -> None:
    assert len(_sources()) > 20


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("tritonclient", lambda rel: rel in ("orchestrator/triton/adapter.py", "orchestrator/triton/model_config.py")),
        ("torch", lambda rel: rel.startswith(("exporter/", "profiler/"))),
        ("grpc", _front_end),
        ("grpc_health", _front_end),
        ("grpc_reflection", _front_end),
        ("grpc_tools", lambda rel: rel == "orchestrator/frontend/generate.py"),
        ("google.protobuf", lambda rel: _front_end(rel) or rel == "orchestrator/triton/model_config.py"),
        ("exporter", lambda rel: not rel.startswith("orchestrator/") or rel == "orchestrator/cli_demo.py"),
    ],
)
def test_only_the_seam_imports(module: str, allowed: Callable[[str], bool]) -> None:
    assert _violations(allowed, module) == []


def test_core_and_simulator_are_pure() -> None:
    forbidden = ("time", "datetime", "asyncio", "grpc", "tritonclient", "socket", "subprocess", "threading", "os")
    bad = []
    for pkg in ("orchestrator/core", "orchestrator/simulate"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for line, name in _imports(path):
                if name.split(".")[0] in forbidden:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert bad == []


def test_nothing_below_the_front_end_imports_it() -> None:
    below = ("orchestrator/engine/", "orchestrator/core/", "orchestrator/simulate/", "orchestrator/triton/")
    bad = []
    for module in ("orchestrator.frontend", "orchestrator.client"):
        bad += _violations(lambda rel: not rel.startswith(below), module)
    assert bad == []


def test_the_front_end_sees_only_the_engine_contract() -> None:
    bad = [
        v
        for v in _violations(lambda rel: not _front_end(rel), "orchestrator.engine")
        if not v.endswith(" imports orchestrator.engine.types")
    ]
    assert bad == []
