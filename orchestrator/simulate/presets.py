"""Hardware presets: a cost profile plus CoServe's executors per board, as package YAML files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config_reader import Reader, read_yaml_file
from orchestrator.core.profile import CostProfile, parse_profile
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig, parse_executors
from orchestrator.errors import ConfigError

PRESET_DIR = Path(__file__).with_name("presets")


@dataclass(frozen=True)
class Preset:
    name: str
    profile: CostProfile
    executors: Mapping[str, tuple[ExecutorConfig, ...]]
    gpu_context_bytes: int = 0

    def config(self, board: str, policy: str = "coserve") -> ServeConfig:
        execs = self.executors.get(board) or next(iter(self.executors.values()))
        return ServeConfig(executors=execs, policy=policy, gpu_context_bytes=self.gpu_context_bytes)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def parse_preset(data: Any, source: str) -> Preset:
    r = Reader(source)
    top = r.mapping(data, "(top level)")
    r.unknown(top, {"name", "description", "profile", "executors", "gpu_context_bytes"}, "")
    profile = parse_profile(r.required(top, "profile", ""), source)
    ex = r.mapping(r.required(top, "executors", ""), "executors")
    boards = {str(b): parse_executors(v, r, f"executors.{b}") for b, v in ex.items()}
    if not boards:
        raise r.fail("executors", "must define executors for at least one board")
    context = int(r.number(top.get("gpu_context_bytes", 0), "gpu_context_bytes"))
    return Preset(str(top.get("name", Path(source).stem)), profile, boards, context)


def load_preset(name: str) -> Preset:
    """A packaged preset by name (``paper-numa``), else the preset file at path ``name``.

    A name that is neither is an unknown preset; a path that exists but cannot be read as a YAML
    file (a directory, not UTF-8, not YAML) is a ``ConfigError`` naming that file.
    """
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        path = Path(name)
        if not path.exists():
            raise ConfigError("--preset", name, f"unknown preset (known: {', '.join(preset_names())})")
    source = str(path)
    return parse_preset(read_yaml_file(path, source), source)
