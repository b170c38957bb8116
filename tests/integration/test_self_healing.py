"""Self-healing with real faults on the real embedded tritonserver, during a streamed board.

A board is streamed through the service (``run_service`` with the demo's serve config: one CPU
executor whose budget holds one expert) while a real process is killed or frozen: a model
process (SIGKILL), the tritonserver itself (SIGKILL), or the tritonserver frozen (SIGSTOP). With
no operator, the board must complete: every component exactly one verdict (none lost, none
twice), each the ONNX Runtime reference's, the core's accounting never over the budget, no
living model process the core does not count (the killed server's are gone before its successor
starts; one process per expert), and health NOT_SERVING during a server restart, SERVING again
after it. (Whether the measured footprint of what the core counts fits the budget is the cost
profile's accuracy, checked by test_demo, not the watchdog's: here a quick profile measured on
the loaded box put one expert below what its process later held, by up to 10%.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.board_source import BoardSource
from orchestrator.client import InspectionClient
from orchestrator.coe import CoEDefinition
from orchestrator.config_reader import read_yaml_file
from orchestrator.core.memory import ExpertState
from orchestrator.core.profile import parse_profile
from orchestrator.demo import EXECUTOR, demo_budget_bytes, demo_spec
from orchestrator.engine.types import InspectRequest, Verdict
from orchestrator.frontend.board import BoardSummary
from orchestrator.serve import Service, run_service
from orchestrator.triton import processes
from orchestrator.triton.adapter import TritonAdapter
from tests.integration.test_demo import expected_verdicts
from tests.integration.test_faults import board as board  # noqa: F401 - the fixture
from tests.integration.test_faults import busiest_classifier, stubs_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@dataclass
class Healed:
    verdicts: list[Verdict] = field(default_factory=list)
    health: list[str] = field(default_factory=list)  # transitions, in order
    violations: list[str] = field(default_factory=list)
    restarts: int = 0
    reloads: int = 0
    recovery_s: list[float] = field(default_factory=list)
    fault_at: float | None = None
    wall_s: float = 0.0


def stream_with_fault(
    tiny: tuple[CoEDefinition, Path], coe_file: Path, profile_file: Path,
    fault: Callable[[Service], None], after: int = 8,
) -> Healed:
    """Stream the board; run ``fault(service)`` once ``after`` verdicts are in (see module doc)."""
    coe, repo = tiny
    profile = parse_profile(read_yaml_file(profile_file), str(profile_file))
    budget = demo_budget_bytes(profile, 1)
    spec = demo_spec(coe_file, repo, profile_file, budget, None)
    requests = [
        InspectRequest("heal", str(r.request_id), r.component_type, r.image)
        for r in BoardSource(coe, seed=0, defect_share=0.05).requests(None, order="board", encoding="png")
    ]
    out = Healed()

    async def on_ready(service: Service) -> None:
        done = asyncio.Event()

        async def watch(client: InspectionClient) -> None:
            while not done.is_set():
                try:
                    state = await client.health(timeout=1.0)
                except Exception as exc:  # noqa: BLE001 - any failure to answer is recorded
                    state = f"no answer: {exc}"
                if not out.health or out.health[-1] != state:
                    out.health.append(state)
                for ex in service.engine.status().executors:
                    if ex.used_bytes > ex.budget_bytes:
                        out.violations.append(f"accounted {ex.used_bytes} > {ex.budget_bytes}")
                # no memory the core does not count: every living model process (of the server
                # now running: the old one's are gone before it starts) serves an expert the
                # core accounts for, one process each
                pool = service.engine.core.pool(EXECUTOR)
                counted = set(pool.experts_in(ExpertState.LOADING, ExpertState.READY, ExpertState.UNLOADING))
                # any parent: the old server's too
                models = [m for m in map(model_of, stubs_for(repo)) if m is not None]
                since = f"{time.monotonic() - out.fault_at:.2f} s after the fault" if out.fault_at else "before the fault"
                if set(models) - counted or len(models) != len(set(models)):
                    out.violations.append(f"model processes {sorted(models)} {since}, the core counts {sorted(counted)}")
                await asyncio.sleep(0.02)

        began = time.monotonic()
        async with InspectionClient(service.address) as client:
            watcher = asyncio.ensure_future(watch(client))
            try:
                async for item in client.inspect_board(requests, timeout=90):
                    if isinstance(item, BoardSummary):
                        continue
                    out.verdicts.append(item)
                    if len(out.verdicts) == after:
                        out.fault_at = time.monotonic()
                        fault(service)
                # health back to SERVING once the resident set is back (the last batch may end first)
                await client.wait_until_serving(15)
                await asyncio.sleep(0.1)
            finally:
                done.set()
                await watcher
        out.wall_s = time.monotonic() - began
        stats = service.engine.stats
        out.restarts, out.reloads = stats.restarts, stats.reloads
        out.recovery_s = [r.seconds for r in service.engine.watchdog.records if r.ok]
        stop.set()

    async def main() -> None:
        await run_service(spec, stop, on_ready=on_ready, drain_timeout_s=5.0)

    stop = asyncio.Event()
    asyncio.run(main())
    return out


def model_of(pid: int) -> str | None:
    """The model a stub serves; None if it exited since it was listed."""
    parsed = processes.parse_stub_cmdline(processes.read_cmdline(pid))
    return parsed[0] if parsed is not None else None


def check_complete(coe: CoEDefinition, repo: Path, out: Healed) -> None:
    counts = Counter(v.component_id for v in out.verdicts)
    assert len(counts) == coe.board.total, "a component was lost"
    assert max(counts.values()) == 1, f"answered twice: {[c for c, n in counts.items() if n > 1]}"
    errors = [f"{v.component_id}: {v.error}" for v in out.verdicts if v.outcome == "error"]
    assert errors == [], errors
    expected = expected_verdicts(coe, repo)
    assert {v.component_id: v.outcome for v in out.verdicts} == expected
    assert out.violations == []


def serving_from_first(health: list[str]) -> list[str]:
    return health[health.index("SERVING"):] if "SERVING" in health else health


def kill_server(sig: int) -> Callable[[Service], None]:
    def fault(service: Service) -> None:
        [triton] = service.embedded.values()
        assert triton.pid is not None
        os.kill(triton.pid, sig)

    return fault


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["sigkill", "sigstop"])
def test_a_killed_or_frozen_server_is_restarted_and_the_board_completes(
    board: tuple[CoEDefinition, Path], tiny_coe_file: Path, tiny_profile: Path, sig: int  # noqa: F811
) -> None:
    coe, repo = board
    out = stream_with_fault(board, tiny_coe_file, tiny_profile, kill_server(sig))
    check_complete(coe, repo, out)
    print(f"heal: restarts {out.restarts} reloads {out.reloads} health {out.health} recovery {out.recovery_s}")
    assert out.restarts == 1
    # SERVING, then NOT_SERVING while it restarts, then SERVING again with the resident set back
    # (health may still read NOT_SERVING for one poll after on_ready: the part before SERVING is not judged)
    assert serving_from_first(out.health) == ["SERVING", "NOT_SERVING", "SERVING"], out.health
    assert out.wall_s < 60


def test_a_killed_model_process_is_reloaded_and_the_board_completes(
    board: tuple[CoEDefinition, Path], tiny_coe_file: Path, tiny_profile: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The busiest classifier's model process is SIGKILLed mid-board, just before its second
    inference (the moment is taken at the adapter seam; the kill, the server and Triton's
    "not healthy" answer are real)."""
    coe, repo = board
    victim = busiest_classifier(coe)
    original = TritonAdapter.infer
    calls: list[str] = []
    killed: list[int] = []

    async def infer(self: TritonAdapter, name: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        if name == victim and calls.count(name) == 2 and self.process_probe is not None:
            for proc in self.process_probe(name):
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
            while any(processes.is_alive(pid) for pid in killed):
                await asyncio.sleep(0.01)
        return await original(self, name, *args, **kwargs)

    monkeypatch.setattr(TritonAdapter, "infer", infer)
    out = stream_with_fault(board, tiny_coe_file, tiny_profile, lambda _: None)
    assert killed, f"{victim} ran fewer than two inferences"
    check_complete(coe, repo, out)
    assert out.restarts == 0  # a dead model process needs no server restart
    assert out.reloads == 1
    assert serving_from_first(out.health) == ["SERVING"]
