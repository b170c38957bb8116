"""The simulator's own checks catch a core that breaks the rules, whatever the core's pools say.

Each broken core below slips one bad decision past its own ``ExpertPool`` (it hands the driver a
decision its pool never saw), so only the simulator's ledger can notice."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from orchestrator.core.decisions import Decision, Dispatch, Load, Unload
from orchestrator.core.scheduler import CoreScheduler, Request
from orchestrator.simulate.engine import Simulation

from .factories import make_config, make_profile, make_workload

pytestmark = pytest.mark.sim

PROFILE = make_profile()
FAKE = -1  # batch id of a made-up dispatch


class _Broken(CoreScheduler):
    """Forwards every event to the real core, then ``tamper``s once with its decisions; the
    driver's confirmations of made-up decisions are swallowed."""

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.fakes: set[tuple[str, str]] = set()
        self.done = False

    def tamper(self, out: list[Decision]) -> bool:
        """Append one bad decision to ``out`` if it fits the moment; True once done."""
        raise NotImplementedError

    def _after(self, out: list[Decision]) -> list[Decision]:
        if not self.done:
            self.done = self.tamper(out)
        return out

    def on_arrival(self, request: Request, now: float) -> list[Decision]:
        return self._after(super().on_arrival(request, now))

    def on_load_done(self, executor: str, expert: str, now: float, ok: bool = True) -> list[Decision]:
        if (executor, expert) in self.fakes:
            self.fakes.discard((executor, expert))
            return []
        return self._after(super().on_load_done(executor, expert, now, ok))

    def on_unload_done(self, executor: str, expert: str, now: float) -> list[Decision]:
        if (executor, expert) in self.fakes:
            self.fakes.discard((executor, expert))
            return []
        return self._after(super().on_unload_done(executor, expert, now))

    def on_batch_done(self, batch_id: int, now: float, verdicts: Mapping[int, bool]) -> list[Decision]:
        return [] if batch_id == FAKE else self._after(super().on_batch_done(batch_id, now, verdicts))


class LoadsOverBudget(_Broken):
    def tamper(self, out: list[Decision]) -> bool:
        name = self.executor_names()[0]
        expert = next(e for e in self.graph.experts if not self.pool(name).holds(e))
        self.fakes.add((name, expert))
        out.append(Load(name, expert, "disk", self.pool(name).budget_bytes))
        return True


class EvictsARunningExpert(_Broken):
    def tamper(self, out: list[Decision]) -> bool:
        running = [d for d in out if isinstance(d, Dispatch)]
        if running:
            self.fakes.add((running[0].executor, running[0].expert))
            out.append(Unload(running[0].executor, running[0].expert, "broken"))
        return bool(running)


class RunsBeforeLoaded(_Broken):
    def tamper(self, out: list[Decision]) -> bool:
        loads = [d for d in out if isinstance(d, Load)]
        if loads:
            out.append(Dispatch(FAKE, loads[0].executor, loads[0].expert, (), 0))
        return bool(loads)


@pytest.mark.parametrize(
    ("core", "message"),
    [
        (LoadsOverBudget, "> budget"),
        (EvictsARunningExpert, "while a batch runs on it"),
        (RunsBeforeLoaded, "while loading"),
    ],
)
def test_the_simulator_catches_a_broken_core(core: type[CoreScheduler], message: str) -> None:
    wl = make_workload(types=30, requests=60)
    sim = Simulation(wl, make_config((4, 4), 6), PROFILE, "samba-lru", warmup_tasks=0, core_class=core)
    res = sim.run()
    assert [v for v in res.violations if message in v], res.violations


def test_an_honest_core_has_no_violations() -> None:
    wl = make_workload(types=30, requests=60)
    res = Simulation(wl, make_config((4, 4), 6), PROFILE, "samba-lru", warmup_tasks=0).run()
    assert res.violations == []
