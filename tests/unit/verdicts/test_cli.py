"""``coserve verdicts``: the table, ``--json``, ``--since``, ``--config``, and one-line errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.cli_verdicts import parse_since
from orchestrator.errors import ConfigError
from orchestrator.verdicts.store import VerdictStore
from tests.unit.verdicts.test_store import verdict


@pytest.fixture
def log(tmp_path: Path) -> Path:
    clock = [1_796_000_000.0]
    store = VerdictStore(tmp_path / "verdicts.sqlite", clock=lambda: clock[0])
    store.start()

    async def fill() -> None:
        await store.append(verdict("c1", "error", error="expert cls_a failed to load: no memory"))
        clock[0] += 100
        await store.append(verdict("c1", "defect", defect_class=2))
        await store.append(verdict("c2", "pass"))
        await store.append(verdict("x9", "pass", board="other"))

    asyncio.run(fill())
    store.close()
    return tmp_path / "verdicts.sqlite"


def test_the_table_shows_every_record_of_the_board(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verdicts", "--board", "b1", "--log", str(log)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("board b1: 3 verdicts for 2 components")
    assert "outcome" in out[1] and "experts" in out[1]
    assert "error" in out[2] and "    error: expert cls_a failed to load" in out[3]
    assert "defect" in out[4] and "cls_a@1" in out[4] and "2" in out[4]
    assert "x9" not in "\n".join(out)


def test_json_and_since(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verdicts", "--board", "b1", "--log", str(log), "--json", "--since", "2026-11-30T00:54:00Z"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["component_id"], r["outcome"]) for r in records] == [("c1", "defect"), ("c2", "pass")]
    assert records[0]["experts"] == [{"expert": "cls_a", "version": "1", "sha256": None}]
    assert records[0]["logged_at"].endswith("Z") and records[0]["defect_class"] == 2


def test_the_config_names_the_log(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {"coe": "coe.yaml", "repo": "repo", "executors": [{"name": "cpu0", "kind": "cpu", "budget_bytes": 1e8}]}
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    assert main(["verdicts", "--board", "other", "--config", str(tmp_path / "serve.yaml")]) == 0
    assert "x9" in capsys.readouterr().out
    (tmp_path / "off.yaml").write_text(yaml.safe_dump({**config, "verdict_log": {"enabled": False}}))
    assert main(["verdicts", "--board", "b1", "--config", str(tmp_path / "off.yaml")]) == 2
    assert "turned off" in capsys.readouterr().err


def test_errors_are_one_line(tmp_path: Path, log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verdicts", "--board", "b1", "--log", str(tmp_path / "nope.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no verdict log at" in err
    assert main(["verdicts", "--board", "b1", "--log", str(log), "--since", "yesterday"]) == 2
    assert "--since" in capsys.readouterr().err
    assert main(["verdicts", "--board", "nobody", "--log", str(log)]) == 0
    assert "no verdicts for board 'nobody'" in capsys.readouterr().out


def test_since_forms() -> None:
    assert parse_since("15m", now=1000.0) == 100.0
    assert parse_since("1d", now=100_000.0) == 100_000.0 - 86_400
    assert parse_since("1970-01-01T00:01:00") == 60.0
    assert parse_since("1970-01-01T01:01:00+01:00") == 60.0
    with pytest.raises(ConfigError):
        parse_since("soon")
