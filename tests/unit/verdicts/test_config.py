"""The ``verdict_log:`` block: defaults (on, beside the config), off, and errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.serve_file import parse_serve_file
from orchestrator.verdicts.config import VerdictLogConfig


def serve_file(tmp_path: Path, **extra: object):  # type: ignore[no-untyped-def]
    data = {"coe": "coe.yaml", "repo": "repo", "executors": [{"name": "cpu0", "kind": "cpu", "budget_bytes": 1e8}],
            **extra}
    return parse_serve_file(data, "serve.yaml", tmp_path)


def test_the_log_is_on_by_default_beside_the_config(tmp_path: Path) -> None:
    log = serve_file(tmp_path).verdict_log
    assert log == VerdictLogConfig(tmp_path / "verdicts.sqlite")
    assert (log.sync, log.max_age_s, log.max_bytes) == ("normal", 30 * 24 * 3600.0, 1_000_000_000)


def test_keys_are_read_and_paths_are_relative_to_the_config(tmp_path: Path) -> None:
    log = serve_file(tmp_path, verdict_log={"path": "logs/v.db", "sync": "full", "max_age_s": 60,
                                            "max_bytes": None, "usage_save_s": 5, "probe_every_s": 0.5}).verdict_log
    assert log is not None
    assert (log.path, log.sync, log.max_age_s, log.max_bytes, log.usage_save_s, log.probe_every_s) == (
        tmp_path / "logs/v.db", "full", 60.0, None, 5.0, 0.5)
    assert serve_file(tmp_path, verdict_log={"path": "/abs/v.db"}).verdict_log.path == Path("/abs/v.db")


def test_it_can_be_turned_off(tmp_path: Path) -> None:
    assert serve_file(tmp_path, verdict_log={"enabled": False}).verdict_log is None
    assert serve_file(tmp_path, verdict_log=False).verdict_log is None


@pytest.mark.parametrize(("block", "field"), [
    ({"sync": "sometimes"}, "verdict_log.sync"),
    ({"max_bytes": -1}, "verdict_log.max_bytes"),
    ({"max_age_s": "soon"}, "verdict_log.max_age_s"),
    ({"colour": "red"}, "verdict_log.colour"),
    ({"enabled": "yes"}, "verdict_log.enabled"),
    ("verdicts.sqlite", "verdict_log"),
])
def test_errors_name_the_file_and_the_field(tmp_path: Path, block: object, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        serve_file(tmp_path, verdict_log=block)
    assert caught.value.source == "serve.yaml" and caught.value.field == field
