"""An asyncio event loop on a virtual clock: ``asyncio.sleep(dt)`` takes no real time.

When nothing is ready to run, the loop jumps its clock to the next timer instead of waiting, so
the engine on the profile-timed fake backend sees exactly the simulator's timings, in microseconds
of real time. (The selector is polled without blocking; I/O still works, it just does not wait.)
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector:
    def __init__(self, inner: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._inner, self._loop = inner, loop

    def select(self, timeout: float | None = None) -> list[Any]:
        events = self._inner.select(0)
        if not events and timeout is not None and timeout > 0:
            self._loop.virtual_now += timeout
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 0.0
        self._selector = _JumpingSelector(self._selector, self)  # type: ignore[has-type,assignment]

    def time(self) -> float:
        return self.virtual_now


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """``coro`` on a virtual clock; then, as ``asyncio.run`` does, every task it left running (an
    engine a test did not close: its version watch, loads in flight) is cancelled and awaited
    before the loop closes, so none is destroyed pending or runs its clean-up without a loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
