"""orchestrator.aio: which loop the long-running commands run on."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator import aio
from orchestrator.errors import ConfigError


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_default_is_uvloop_where_installed_and_the_env_var_forces_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(aio.ENV, raising=False)
    assert aio.loop_name() == "uvloop"
    assert aio.run(_loop_type()).startswith("uvloop")
    monkeypatch.setenv(aio.ENV, "asyncio")
    assert aio.loop_name() == "asyncio"
    assert aio.run(_loop_type()).startswith("asyncio")
    assert aio.run(_loop_type(), loop="uvloop").startswith("uvloop")  # an explicit choice wins


def test_an_unknown_loop_is_a_clear_error_and_the_coroutine_is_not_left_unawaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(aio.ENV, "trio")
    coro = _loop_type()
    with pytest.raises(ConfigError, match="environment: COSERVE_EVENT_LOOP: 'trio' is not an event loop"):
        aio.run(coro)
    assert coro.cr_frame is None  # closed, not pending
