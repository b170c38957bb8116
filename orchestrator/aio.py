"""The event loop coserve's long-running commands run on (``coserve serve``, ``demo``, ``bench``).

uvloop (libuv) where it is installed, else asyncio's own loop; ``COSERVE_EVENT_LOOP=asyncio``
forces asyncio's. Why: on the 2-core bench box the service's own per-``Inspect`` work is mostly
the event loop and gRPC's machinery around one Triton call, and on uvloop the orchestrator added
less at p50 than on asyncio's loop in alternating pairs of ``benchmarks/serve_overhead.py``: 0.22
ms less on average over 15 on a loaded box, 0.10 ms over 8 on a quiet one (docs/serving.md). Both loops run the same code:
signal handlers (``loop.add_signal_handler``), grpc.aio and tritonclient's aio client work on
either, and the test suite runs the commands on the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from orchestrator.errors import ConfigError

T = TypeVar("T")

#: the environment variable that picks the loop: "uvloop" (the default where installed) or "asyncio"
ENV = "COSERVE_EVENT_LOOP"
LOOPS = ("uvloop", "asyncio")


def loop_name(choice: str | None = None) -> str:
    """The loop ``run`` uses: ``choice`` (or ``$COSERVE_EVENT_LOOP``), uvloop only if importable.
    Raises ConfigError (the CLI's usage error, exit 2) for a name that is neither loop."""
    name = (choice or os.environ.get(ENV) or "uvloop").strip().lower()
    if name not in LOOPS:
        raise ConfigError("environment", ENV, f"{name!r} is not an event loop (one of {', '.join(LOOPS)})")
    if name == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
    return name


def run(main: Coroutine[Any, Any, T], *, loop: str | None = None) -> T:
    """``asyncio.run(main)`` on the loop ``loop_name(loop)`` names (same contract: a new loop,
    cancelled leftovers, async generators shut down, the loop closed)."""
    try:
        name = loop_name(loop)
    except ConfigError:
        main.close()  # never started: do not leave it unawaited
        raise
    if name == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task (None: nothing to do) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
