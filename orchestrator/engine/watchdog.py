"""The watchdog: what Triton does not recover by itself, recovered (docs/triton.md, docs/serving.md).

Two parts:

- **Policy, pure** (``classify``, ``decide``, ``RestartBudget``): a failure of one backend call
  is classified (``Fault``) and, with the number of attempts so far and whether its server can be
  restarted, turned into an action: ``RELOAD`` the expert (a dead model process: Triton keeps it
  READY while every request fails "not healthy"), ``RESTART`` the server (it died, was killed, is
  frozen, or holds a model it will never finish loading or unloading), or ``FAIL`` with a reason
  that says why no more is tried. No I/O and no clock of its own: tests drive it with data.
- **Coordinator** (``Watchdog``): single-flight server restarts through a ``ServerControl`` the
  shell provides (``orchestrator.serve`` passes ``orchestrator.triton.launcher.EmbeddedServerControl``;
  the engine never imports the launcher), a per-server *generation* that tells a call which began
  before a restart (its failure is the restart's doing, whatever its wording) from one that did
  not, a monitor that polls the control for a dead or frozen server every ``poll_s`` (so a server
  that dies while idle is restarted too, and health reports it at once), and a record of every
  recovery with its duration (``records``; ``benchmarks/recovery_times.py`` reports them).

Contract of a restart: ``ServerControl.restart(server)`` returns only once the old server and all
its model processes are gone (so the memory they held is really free) and a new one answers on the
address the backend now uses; the caller's ``restore`` then loads the resident set back before
anyone waiting is released. The core's accounting is never touched by a restart: the experts it
counts as resident are the ones put back, so its budget holds throughout.

External servers (not in ``ServerControl.restartable()``) are never restarted: for them only a
reload and the bounded retries apply, and a lost server is reported as before (UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.errors import ModelLoadError, ModelUnloadTimeoutError, ServerUnavailableError, TritonError


class Fault(enum.Enum):
    """What a failed backend call says about its expert or server."""

    MODEL_PROCESS_DIED = "model process died"
    SERVER_LOST = "server down"  # died, killed, frozen, unreachable, or restarted under the call
    LOAD_WEDGED = "load never finishes"  # died before its handshake, or past its deadline
    UNLOAD_STUCK = "unload never finishes"
    OTHER = "other"  # the expert itself (corrupt file, bad input): retrying cannot help


class Action(enum.Enum):
    RELOAD = "reload"
    RESTART = "restart"
    FAIL = "fail"


#: words of the adapter's messages for a load Triton will never finish (orchestrator.triton.adapter)
_WEDGED_WORDS = ("only a server restart frees the name", "deadline although the server answers")


def classify(exc: BaseException, *, restarted_meanwhile: bool = False) -> Fault:
    """The fault behind ``exc`` (a ``CoserveError`` from a backend call).

    ``restarted_meanwhile``: the call's server was restarted (or is being restarted) since the
    call began; then the call failed because its server went away, whatever the wording (a broken
    connection reads "socket closed", "cancelled", or a load's dead process).
    """
    if restarted_meanwhile or isinstance(exc, ServerUnavailableError):
        return Fault.SERVER_LOST
    message = f"{exc} {getattr(exc, 'server_message', '') or ''}"
    if isinstance(exc, TritonError) and "is not healthy" in (exc.server_message or ""):
        return Fault.MODEL_PROCESS_DIED
    if isinstance(exc, ModelUnloadTimeoutError):
        return Fault.UNLOAD_STUCK
    if isinstance(exc, ModelLoadError) and any(w in message for w in _WEDGED_WORDS):
        return Fault.LOAD_WEDGED
    return Fault.OTHER


@dataclass(frozen=True)
class RecoveryPolicy:
    """Bounds of the recovery (docs/serving.md, "Self-healing").

    ``attempts``: tries of one operation (batch, load, unload) in all, the first included;
    ``max_restarts`` restarts of one server within ``restart_window_s`` (beyond: the server is
    lost, as without a watchdog); ``poll_s``: how often the monitor asks whether a server died.
    """

    attempts: int = 3
    max_restarts: int = 3
    restart_window_s: float = 60.0
    poll_s: float = 0.1


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""


def decide(fault: Fault, attempt: int, *, restartable: bool, policy: RecoveryPolicy) -> Decision:
    """What to do after try number ``attempt`` (1 = the first) of an operation failed with ``fault``."""
    if fault is Fault.OTHER:
        return Decision(Action.FAIL, "the expert itself failed (retrying cannot help)")
    if attempt >= policy.attempts:
        return Decision(Action.FAIL, f"gave up after {attempt} attempts ({fault.value})")
    if fault is Fault.MODEL_PROCESS_DIED:
        return Decision(Action.RELOAD)
    if not restartable:
        return Decision(Action.FAIL, "not restarted: coserve did not start this server")
    return Decision(Action.RESTART)


@dataclass
class RestartBudget:
    """At most ``policy.max_restarts`` restarts of one server within ``policy.restart_window_s``."""

    policy: RecoveryPolicy
    times: list[float] = field(default_factory=list)

    def allows(self, now: float) -> bool:
        self.times = [t for t in self.times if now - t < self.policy.restart_window_s]
        return len(self.times) < self.policy.max_restarts

    def spend(self, now: float) -> None:
        self.times.append(now)


class ServerControl(Protocol):
    """The shell's seam for servers it owns (``orchestrator.triton.launcher.EmbeddedServerControl``)."""

    def restartable(self) -> Sequence[str]:
        """Names of the servers that can be restarted (the embedded ones)."""
        ...

    def failure(self, server: str) -> str | None:
        """Why ``server`` cannot serve now (died with its exit status, frozen), None if it can.
        Cheap (no I/O beyond /proc): the monitor calls it every ``poll_s``."""
        ...

    async def restart(self, server: str) -> str:
        """Stop what is left of ``server`` (it and its model processes gone) and start it again;
        the backend reaches the new one on return. Returns how the old one ended. Raises
        ``CoserveError`` when it cannot be started again."""
        ...


@dataclass(frozen=True)
class Recovery:
    """One recovery: what (``reload`` of an expert, ``restart`` of a server), why, how long it
    took (detection not included: ``detected_s`` is when it began on the engine's clock), and
    whether it worked."""

    action: str
    server: str
    why: str
    detected_s: float
    seconds: float
    ok: bool
    expert: str | None = None
    restored: int = 0  # experts put back after a restart
    server_s: float = 0.0  # of ``seconds``: the server's restart itself (the rest: putting the set back)


class Watchdog:
    """Coordinates restarts and records recoveries (see the module doc).

    ``restore(server)`` (the engine's) loads the resident set of the server's executors back and
    returns how many experts it loaded; ``clock`` gives the engine's ``now``.
    """

    def __init__(
        self,
        control: ServerControl | None,
        restore: Callable[[str], Awaitable[int]],
        clock: Callable[[], float],
        policy: RecoveryPolicy | None = None,
        on_record: Callable[[Recovery], None] = lambda _: None,
    ) -> None:
        self.control = control
        self._on_record = on_record
        self.policy = policy or RecoveryPolicy()
        self._restore = restore
        self._clock = clock
        self._restartable = set(control.restartable()) if control is not None else set()
        self._generation: dict[str, int] = {}
        self._running: dict[str, asyncio.Task[bool]] = {}
        self._budgets: dict[str, RestartBudget] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._stopped = False
        #: why a server is given up (its restarts failed or ran out), by server
        self.lost: dict[str, str] = {}
        self.records: list[Recovery] = []

    # -- state ---------------------------------------------------------------------------------
    def restartable(self, server: str) -> bool:
        return server in self._restartable and not self._stopped

    def generation(self, server: str) -> int:
        """Bumped when a restart of ``server`` begins: a call that saw another value was cut off."""
        return self._generation.get(server, 0)

    def recovering(self, server: str | None = None) -> bool:
        """A restart of ``server`` (of any server: None) is under way."""
        if server is None:
            return bool(self._running)
        return server in self._running

    def interrupted(self, server: str, since_generation: int) -> bool:
        """Whether a call on ``server`` that began at ``since_generation`` was cut off by a restart."""
        return self.recovering(server) or self.generation(server) != since_generation

    async def wait(self, server: str) -> None:
        """Return once no restart of ``server`` is under way (at once if none is)."""
        task = self._running.get(server)
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    def count(self, action: str) -> int:
        return sum(1 for r in self.records if r.action == action and r.ok)

    def note_reload(self, server: str, expert: str, why: str, began_s: float, ok: bool) -> None:
        self._record(Recovery("reload", server, why, began_s, self._clock() - began_s, ok, expert))

    def _record(self, record: Recovery) -> None:
        self.records.append(record)
        self._on_record(record)

    # -- restarts ------------------------------------------------------------------------------
    async def restart(self, server: str, why: str) -> bool:
        """Restart ``server`` (or join the restart under way) and put its resident set back.

        True once it serves again; False when it cannot (not restartable, stopping, its restart
        budget spent, or the restart or restore failed; ``lost[server]`` says why).
        """
        task = self._running.get(server)
        if task is None:
            if not self.restartable(server):
                self.lost.setdefault(server, f"cannot restart {server}: {why}")
                return False
            budget = self._budgets.setdefault(server, RestartBudget(self.policy))
            now = self._clock()
            if not budget.allows(now):
                self.lost[server] = (
                    f"{why}; not restarted again: {self.policy.max_restarts} restarts within "
                    f"{self.policy.restart_window_s:.0f} s already"
                )
                return False
            budget.spend(now)
            self._generation[server] = self.generation(server) + 1
            task = asyncio.ensure_future(self._restart(server, why, now))
            self._running[server] = task
            task.add_done_callback(self._finished(server))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                return False
            raise

    def _finished(self, server: str) -> Callable[[asyncio.Task[bool]], None]:
        def done(_: asyncio.Task[bool]) -> None:
            self._running.pop(server, None)

        return done

    async def _restart(self, server: str, why: str, began: float) -> bool:
        assert self.control is not None
        try:
            ended = await self.control.restart(server)
            server_s = self._clock() - began
            restored = await self._restore(server)
        except Exception as exc:  # noqa: BLE001 - any failure of a restart is reported, not raised
            self.lost[server] = f"{why}; restarting it failed: {exc}"
            self._record(Recovery("restart", server, why, began, self._clock() - began, False))
            return False
        self.lost.pop(server, None)
        detail = f"{why} ({ended})" if ended else why
        self._record(
            Recovery("restart", server, detail, began, self._clock() - began, True, restored=restored, server_s=server_s)
        )
        return True

    # -- monitor -------------------------------------------------------------------------------
    def start_monitor(self) -> None:
        """Poll the control for dead or frozen restartable servers (idempotent; needs a loop)."""
        if self.control is not None and self._restartable and self._monitor is None:
            self._monitor = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        assert self.control is not None
        while not self._stopped:
            for server in sorted(self._restartable):
                if server in self._running or server in self.lost:
                    continue
                why = self.control.failure(server)
                if why is not None:
                    asyncio.ensure_future(self.restart(server, why))
            await asyncio.sleep(self.policy.poll_s)

    def freeze(self) -> None:
        """Start no more restarts (the service is stopping: one now would only delay the stop)."""
        self._stopped = True

    async def stop(self, timeout_s: float = 0.5) -> None:
        """No more restarts; the monitor ends; a restart under way is let finish within
        ``timeout_s`` (its server's owner stops the server after this), then cancelled."""
        self._stopped = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(BaseException):
                await self._monitor
            self._monitor = None
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=timeout_s)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

