"""``Engine.observe_footprint``: a measured footprint above the core's figures is counted against
the budget (and evicts when it does not fit); the shell's reserve for the server's growth is not
an excess."""

from __future__ import annotations

from orchestrator.core.decisions import Unload
from tests.unit.core.factories import MB
from tests.unit.engine.test_engine import config, make_engine, request
from tests.unit.engine.virtual_time import run_virtual


def test_status_says_what_the_shell_set_aside_of_a_budget() -> None:
    # an operator configured 60 MB and sees the core's 52: Status says where the 8 went
    # (mutation: the note left out, or the configured figure without the reserve)
    engine, _ = make_engine(config(budget_mb=52))
    engine.reserved_bytes = {"cpu0": 8 * MB}
    notes = list(engine.status().notes)
    assert any("8.0 MB of its configured 60.0 MB budget set aside" in n and "experts get 52.0 MB" in n
               for n in notes), notes


def test_a_measured_excess_is_counted_and_reported_and_an_overflow_evicts() -> None:
    engine, backend = make_engine(config(budget_mb=60))

    async def drive() -> tuple[int, int, list[str], int]:
        await engine.start()
        for i in range(3):
            await engine.inspect(request(f"t{i}", cid=str(i)))
        pool = engine.core.pool("cpu0")
        accounted = pool.used_bytes
        # the server's growth the shell reserved (4 MB) plus 2 MB nobody counted
        engine.observe_footprint("cpu0", accounted + 6 * MB, reserved_bytes=4 * MB)
        excess = pool.unattributed_bytes
        notes = list(engine.status().notes)
        # then 40 MB more than the figures: over the 60 MB budget, so idle experts go
        engine.observe_footprint("cpu0", accounted + 44 * MB, reserved_bytes=4 * MB)
        evicted = sum(1 for d in engine.decisions if isinstance(d, Unload) and "measured footprint" in d.reason)
        await engine.close()
        return accounted, excess, notes, evicted

    accounted, excess, notes, evicted = run_virtual(drive())
    assert accounted > 0
    assert excess == 2 * MB  # kills: counting the reserve as excess, or ignoring the measurement
    assert any("2.0 MB measured beyond the cost profile" in n for n in notes), notes
    assert evicted >= 1
    assert backend.violations == []
