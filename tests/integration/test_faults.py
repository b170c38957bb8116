"""Real faults on the real embedded tritonserver, during a real demo board.

Each test kills, freezes or signals a real process (the server, a model process, the ``coserve``
command itself) and checks that the result says what happened: every component has a verdict or
a named cause, the exit code is non-zero when a component was not inspected, the resident bound
holds, the command ends within seconds, and nothing it started outlives it. A killed or frozen
embedded server is restarted by the watchdog and the board completes (exit 0, the recovery in the
summary); the exactly-once and health checks of those faults: test_self_healing.py.

Where the moment of a fault must be exact (a model process killed just before an inference), the
test wraps the adapter call at the seam and does the real kill there: the server, the process
and Triton's reaction are real.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.coe import CoEDefinition
from orchestrator.demo import EXIT_OK, EXIT_SERVER_LOST, DemoReport, run_demo
from orchestrator.triton import processes
from orchestrator.triton.adapter import TritonAdapter
from orchestrator.triton.launcher import COSERVE_SHM_PREFIX, free_port, region_tag
from tests.integration.test_demo import expected_verdicts

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


def server_for(repo: Path) -> int | None:
    """Pid of the living tritonserver serving ``repo`` (the one ``run_demo`` started), if any."""
    flag = f"--model-repository={repo.resolve()}"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            argv = processes.read_cmdline(int(entry))
            if argv and argv[0].endswith("/tritonserver") and flag in argv and processes.is_alive(int(entry)):
                return int(entry)
    return None


def stubs_for(repo: Path) -> list[int]:
    """Living model processes serving models of ``repo`` (whatever their parent)."""
    inside = f"{repo.resolve()}/"
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and _is_stub_of(int(e), inside)]


def _is_stub_of(pid: int, inside: str) -> bool:
    argv = processes.read_cmdline(pid)
    return processes.parse_stub_cmdline(argv) is not None and argv[1].startswith(inside) and processes.is_alive(pid)


def coserve_regions() -> set[str]:
    """coserve /dev/shm regions that no living tritonserver owns (what a dead server left)."""
    servers = [" ".join(a) for a in processes.all_cmdlines() if a and a[0].endswith("/tritonserver")]
    regions = {n for n in os.listdir("/dev/shm") if n.startswith(COSERVE_SHM_PREFIX)}
    return {n for n in regions if not any(str(region_tag(n)) in line for line in servers)}


def busiest_classifier(coe: CoEDefinition) -> str:
    counts: dict[str, int] = {}
    for ctype, n in coe.board.mix.items():
        counts[coe.routing[ctype].classifier] = counts.get(coe.routing[ctype].classifier, 0) + n
    return max(sorted(counts), key=lambda name: counts[name])


def after_verdicts(repo: Path, n: int, action: Callable[[int], None]) -> Callable[[int], None]:
    """A ``progress`` callback for run_demo that runs ``action(server pid)`` once ``n`` verdicts are in."""
    seen = [0]

    def progress(k: int) -> None:
        seen[0] += k
        if seen[0] == n:
            pid = server_for(repo)
            assert pid is not None
            action(pid)

    return progress


@pytest.fixture
def board(tiny_board: tuple[CoEDefinition, Path]) -> Iterator[tuple[CoEDefinition, Path]]:
    regions_before = coserve_regions()
    yield tiny_board
    assert server_for(tiny_board[1]) is None, "a server outlived the demo"
    deadline = time.monotonic() + 3
    while stubs_for(tiny_board[1]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stubs_for(tiny_board[1]) == [], "a model process outlived the demo"
    assert coserve_regions() <= regions_before, "a /dev/shm region outlived the demo"


def demo(board: tuple[CoEDefinition, Path], coe_file: Path, profile: Path, **kw: Any) -> DemoReport:
    coe, repo = board
    kw.setdefault("max_resident", 1)
    kw.setdefault("say", lambda _: None)
    return run_demo(coe, coe_file, repo, profile, **kw)


def test_unreachable_server_means_no_verdicts_and_exit_3(
    board: tuple[CoEDefinition, Path], tiny_coe_file: Path, tiny_profile: Path
) -> None:
    """Before: "400 NOT INSPECTED (expert failed)" and exit 0."""
    coe, _ = board
    lines: list[str] = []
    began = time.monotonic()
    report = demo(board, tiny_coe_file, tiny_profile, triton_url=f"127.0.0.1:{free_port()}", say=lines.append)
    assert time.monotonic() - began < 20
    assert report.exit_code() == EXIT_SERVER_LOST
    assert report.not_inspected() == coe.board.total
    assert "not reachable" in (report.server_lost or "")
    assert sum("server lost" in line for line in lines) == 1  # said once
    assert any(f"{coe.board.total} NOT INSPECTED" in line for line in lines)


def test_server_killed_mid_board_is_restarted_and_the_demo_completes(
    board: tuple[CoEDefinition, Path], tiny_coe_file: Path, tiny_profile: Path
) -> None:
    """Before the watchdog: exit 3 with the rest of the board NOT INSPECTED (and before that,
    exit 0 and "server stopped" although tritonserver had been killed). Now the service restarts
    it, the board completes (exit 0) and the summary says what was recovered and why."""
    coe, repo = board
    lines: list[str] = []
    killed: list[int] = []

    def kill(pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    progress = after_verdicts(repo, 5, kill)
    report = demo(board, tiny_coe_file, tiny_profile, progress=progress, say=lines.append)
    assert killed and not processes.is_alive(killed[0])
    assert report.exit_code() == EXIT_OK, report.causes
    assert report.verdicts == expected_verdicts(coe, repo)  # every component, the right verdict
    assert any("restart of the server" in r and "killed by SIGKILL" in r for r in report.recoveries)
    assert any(line.startswith("  watchdog: restart of the server") for line in lines)
    assert "tritonserver stopped (drained)" in (report.server_end or "")  # the new one, at the end


def test_frozen_server_is_replaced_within_seconds(
    board: tuple[CoEDefinition, Path], tiny_coe_file: Path, tiny_profile: Path
) -> None:
    """Before: every call waited out a 60 s deadline (a board would take over 20 minutes); then
    it was detected within ~3 s and the demo ended with exit 3. Now the watchdog sees the frozen
    process (its state), kills it, starts a new server and the board completes."""
    coe, repo = board
    frozen: list[tuple[int, float]] = []

    def freeze(pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)
        frozen.append((pid, time.monotonic()))

    report = demo(board, tiny_coe_file, tiny_profile, progress=after_verdicts(repo, 5, freeze))
    assert frozen and time.monotonic() - frozen[0][1] < 30  # the rest of the board included
    assert not processes.is_alive(frozen[0][0])  # the frozen one was killed, not left behind
    assert report.exit_code() == EXIT_OK, report.causes
    assert report.verdicts == expected_verdicts(coe, repo)
    assert any("restart of the server" in r and "frozen" in r for r in report.recoveries)


def test_model_process_killed_before_inference_is_reloaded_once(
    board: tuple[CoEDefinition, Path], tiny_coe_file: Path, tiny_profile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: its components were lost without a retry, the unload waited 30 s, and the demo
    reported 3 experts holding memory against a bound of 2."""
    coe, repo = board
    victim = busiest_classifier(coe)
    original = TritonAdapter.infer
    killed: list[int] = []

    async def infer(self: TritonAdapter, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == victim and not killed:
            assert self.process_probe is not None
            [stub] = self.process_probe(name)
            os.kill(stub.pid, signal.SIGKILL)
            killed.append(stub.pid)
            while processes.is_alive(stub.pid):
                await asyncio.sleep(0.01)
        return await original(self, name, *args, **kwargs)

    monkeypatch.setattr(TritonAdapter, "infer", infer)
    report = demo(board, tiny_coe_file, tiny_profile)
    assert killed
    assert report.exit_code() == EXIT_OK
    assert report.verdicts == expected_verdicts(coe, repo)  # the retried batch gave the right verdicts
    assert report.reloads == 1


def test_model_process_killed_during_load_is_recovered(
    board: tuple[CoEDefinition, Path], tiny_coe_file: Path, tiny_profile: Path
) -> None:
    """Before: the run hung 60 s and reported "server not reachable" although the server was fine;
    then the cause was named and the victim's components were NOT INSPECTED (killed before its
    handshake, Triton keeps the model LOADING for good). Now the load is recovered either way:
    after the handshake Triton fails the load and a second load works; before it, the watchdog
    restarts the server (only that frees the name) and loads it again. The board completes."""
    coe, repo = board
    victim = busiest_classifier(coe)
    stop = threading.Event()
    killed: list[int] = []

    def killer() -> None:  # kill the victim's model process the moment it appears
        while not stop.is_set() and not killed:
            pid = server_for(repo)
            if pid is not None:
                for proc in processes.model_processes(pid, victim):
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
            time.sleep(0.001)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    began = time.monotonic()
    try:
        report = demo(board, tiny_coe_file, tiny_profile)
    finally:
        stop.set()
        thread.join()
    assert killed
    assert time.monotonic() - began < 40
    assert report.server_lost is None  # the server was fine all along (a restart is not a loss)
    assert report.exit_code() == EXIT_OK, report.causes
    assert report.verdicts == expected_verdicts(coe, repo)
    # a restart, if one was needed, names the wedged load
    assert all("load" in r for r in report.recoveries if r.startswith("restart"))


def _start_demo(repo: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--repo", str(repo), "--coe", str(repo / "coe.yaml"),
         "--max-resident", "1", "--board-seed", "9"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_line(proc: subprocess.Popen[str], words: str, timeout_s: float = 90) -> list[str]:
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if words in line:
            return seen
    raise AssertionError(f"no line with {words!r}: {''.join(seen)}")


@pytest.mark.parametrize("freeze_first", [False, True], ids=["sigterm", "sigint-on-a-frozen-server"])
def test_signals_stop_the_demo_and_its_server(board: tuple[CoEDefinition, Path], freeze_first: bool) -> None:
    """Before: SIGTERM ended ``coserve demo`` at once and left tritonserver serving on three ports
    with a /dev/shm region and its temporary home; Ctrl-C on a frozen server took 36 s."""
    _, repo = board
    proc = _start_demo(repo)
    try:
        _wait_for_line(proc, "serving demo on")
        server = server_for(repo)
        assert server is not None
        home = Path(processes.read_cmdline(server)[0]).parents[1]
        assert home.is_dir()
        if freeze_first:
            os.kill(server, signal.SIGSTOP)
            time.sleep(1.0)
        began = time.monotonic()
        os.kill(proc.pid, signal.SIGINT if freeze_first else signal.SIGTERM)
        code = proc.wait(timeout=30)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == (130 if freeze_first else 143), proc.stderr.read() if proc.stderr else ""
    assert took < 5.0
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    assert not processes.is_alive(server)
    assert not home.exists()
