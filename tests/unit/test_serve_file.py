"""The shell's part of a serve config (orchestrator/serve_file.py): servers, executors on them,
paths; every error names the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ConfigError
from orchestrator.serve_file import parse_serve_file


def _parse(**top: Any) -> Any:
    data = {"coe": "coe.yaml", "repo": "repo", **top}
    return parse_serve_file(data, "s.yaml", Path("/cfg"))


def _execs(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": f"cpu{i}", "kind": "cpu", "budget_bytes": 1e8, **extra} for i in range(n)]


def test_without_servers_each_executor_gets_its_own_embedded_server() -> None:
    # mutation: the second executor sees the first one's default server as "listed" -> refused
    spec = _parse(executors=_execs(3))
    assert spec.executor_server == {"cpu0": "embedded_cpu0", "cpu1": "embedded_cpu1", "cpu2": "embedded_cpu2"}
    assert all(s.embedded for s in spec.servers.values()) and len(spec.servers) == 3
    assert spec.coe == Path("/cfg/coe.yaml") and spec.repo == Path("/cfg/repo")  # relative to the file


def test_listed_servers_embedded_and_external() -> None:
    execs = _execs(2)
    execs[0]["server"], execs[1]["server"] = "local", "box2"
    spec = _parse(servers=[{"name": "local"}, {"name": "box2", "url": "10.0.0.2:8001"}], executors=execs)
    assert spec.executor_server == {"cpu0": "local", "cpu1": "box2"}
    assert spec.servers["local"].embedded and spec.servers["box2"].url == "10.0.0.2:8001"


@pytest.mark.parametrize(
    ("top", "field", "words"),
    [
        ({"servers": [{"name": "a"}], "executors": _execs(1)}, "executors[0].server", "required when servers are listed (a)"),
        ({"servers": [{"name": "a"}], "executors": _execs(1, server="b")}, "executors[0].server", "names no listed server"),
        ({"servers": [{"name": "a"}, {"name": "a"}], "executors": _execs(1, server="a")}, "servers[1].name", "duplicate"),
        ({"servers": [{"name": "a"}], "executors": _execs(2, server="a")}, "executors[1].server", "one executor per Triton server"),
        ({"servers": [{"name": "a", "url": "nohost"}], "executors": _execs(1, server="a")}, "servers[0].url", ""),
        ({"executors": _execs(1, gpus=[0])}, "executors[0].gpus", "only apply to kind gpu"),
        ({"executors": _execs(1), "listen": "nowhere"}, "listen", "HOST:PORT"),
        ({"executors": _execs(1), "queue_bound": 0}, "queue_bound", ""),
    ],
)
def test_errors_name_the_file_and_the_field(top: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(**top)
    assert info.value.source == "s.yaml" and info.value.field == field
    assert words in str(info.value)


def test_coe_and_repo_are_required() -> None:
    with pytest.raises(ConfigError, match="coe: is required"):
        parse_serve_file({"repo": "r", "executors": _execs(1)}, "s.yaml", Path("/cfg"))
