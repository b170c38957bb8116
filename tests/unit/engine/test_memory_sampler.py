"""MemorySampler on real processes, without Triton: a fake server (a Python process reading
commands) whose children are fake model processes, a Python interpreter started through a link
named ``triton_python_backend_stub`` with a stub's command line (so ``processes.parse_stub_cmdline``
takes them for model processes), each holding touched memory. Their PSS is real, so every
figure the sampler holds is compared with a direct read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine.memory_sampler import MemorySampler
from orchestrator.triton import processes

MB = 1 << 20

STUB_SCRIPT = """\
import signal, sys
hold = []
def grow(mb):
    b = bytearray(mb << 20)
    b[::4096] = b"\\x01" * len(range(0, len(b), 4096))  # touched: resident, private
    hold.append(b)
grow(int(sys.argv[9]))
signal.signal(signal.SIGUSR1, lambda *_: grow(8))
print("ready", flush=True)
sys.stdin.read()  # until the server closes the pipe (it died) or we are killed
"""

SERVER_SCRIPT = """\
import subprocess, sys
stub, repo = sys.argv[1], sys.argv[2]
kids, hold = {}, []
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "spawn":
        model, mb = args
        argv = [stub, f"{repo}/{model}/1/model.py", "shm_" + model, "1", "1", "0", "dir", "0",
                f"{model}_0_0", "rt", mb]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        p.stdout.readline()
        kids[p.pid] = p
        print(p.pid, flush=True)
    elif cmd == "kill":
        p = kids.pop(int(args[0]))
        p.kill()
        p.wait()
        print("ok", flush=True)
    elif cmd == "map":  # map a new file and read it: resident file pages, as a backend's libraries
        import mmap, tempfile
        f = tempfile.TemporaryFile()
        f.write(bytes(range(256)) * (int(args[0]) << 12))
        f.flush()
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        sum(m[i] for i in range(0, len(m), 4096))
        hold.append((f, m))
        print("ok", flush=True)
    elif cmd == "grow":
        b = bytearray(int(args[0]) << 20)
        b[::4096] = b"\\x01" * len(range(0, len(b), 4096))
        hold.append(b)
        print("ok", flush=True)
"""


class FakeServer:
    """A process whose children look like Triton model processes (module doc)."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT, str(root / "triton_python_backend_stub"), str(root / "repo")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.pid = self.proc.pid
        self.stubs: list[int] = []

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def spawn(self, model: str, mb: int) -> int:
        pid = int(self.ask(f"spawn {model} {mb}"))
        self.stubs.append(pid)
        return pid

    def kill_stub(self, pid: int) -> None:
        assert self.ask(f"kill {pid}") == "ok"
        self.stubs.remove(pid)

    def grow(self, mb: int) -> None:
        assert self.ask(f"grow {mb}") == "ok"

    def kill(self) -> None:
        """Die like a server the watchdog restarts: SIGKILL, its model processes with it."""
        for pid in self.stubs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait()
        deadline = time.monotonic() + 5
        while any(processes.is_alive(p) for p in self.stubs) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.stubs.clear()


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    os.symlink(os.path.realpath(sys.executable), tmp_path / "triton_python_backend_stub")
    for model in ("m0", "m1", "m2", "m3"):
        (tmp_path / "repo" / model / "1").mkdir(parents=True)
        (tmp_path / "repo" / model / "1" / "model.py").write_text(STUB_SCRIPT)
    return tmp_path


@pytest.fixture
def servers(fake_root: Path) -> Iterator[list[FakeServer]]:
    made: list[FakeServer] = []
    yield made
    for s in made:
        s.kill()


def new_server(fake_root: Path, servers: list[FakeServer]) -> FakeServer:
    s = FakeServer(fake_root)
    servers.append(s)
    assert s.ask("grow 0") == "ok"  # started and answering
    return s


def direct(server: FakeServer, idle: int) -> int:
    growth = max(0, processes.memory(server.pid).pss_bytes - idle)
    return growth + sum(p.pss_bytes for p in processes.model_processes(server.pid))


def slow(**kw: float) -> dict[str, Any]:
    """Intervals long enough that only pokes (and sync) read during a test."""
    return {"interval_s": 30.0, "full_interval_s": 60.0, "quick_interval_s": 30.0, **kw}


def test_at_every_load_and_unload_the_figure_matches_a_direct_pss_read(
    fake_root: Path, servers: list[FakeServer]
) -> None:
    # Kills: a poke that does not read a new model process's PSS (the figure misses ~16 MB),
    # an unload whose gone process stays counted, a server growth left out.
    s = new_server(fake_root, servers)
    with MemorySampler({"cpu0": s.pid}, **slow()) as sampler:
        idle = sampler.report().idle_bytes["cpu0"]
        pids = []
        for i, model in enumerate(("m0", "m1", "m2")):
            pids.append(s.spawn(model, 16))
            sampler.poke("load", "cpu0", model)
            fp = sampler.sync()
            assert fp is not None and fp.model_processes["cpu0"] == i + 1
            want = direct(s, idle)
            assert abs(fp.executor_bytes("cpu0") - want) <= 1 * MB + 0.02 * want, (i, fp, want)
        assert sampler.report().lifetime_peak_bytes["cpu0"] >= 3 * 16 * MB
        for i, pid in enumerate(pids):
            s.kill_stub(pid)
            sampler.poke("unload", "cpu0", "")
            fp = sampler.sync()
            assert fp is not None and fp.model_processes["cpu0"] == 2 - i
            want = direct(s, idle)
            assert abs(fp.executor_bytes("cpu0") - want) <= 1 * MB + 0.02 * max(want, MB), (i, fp, want)


def test_an_unload_lists_nothing_and_reads_no_pss_and_a_load_reads_one(
    fake_root: Path, servers: list[FakeServer]
) -> None:
    # Kills: the server's PSS read at every poke (its read was the largest cost), a listing at
    # an unload, more than the new process's PSS read at a load.
    s = new_server(fake_root, servers)
    with MemorySampler({"cpu0": s.pid}, **slow()) as sampler:
        pid = s.spawn("m0", 8)
        sampler.poke("load", "cpu0", "m0")
        sampler.sync()
        before = sampler.report()
        s.spawn("m1", 8)
        sampler.poke("load", "cpu0", "m1")
        sampler.sync()
        after_load = sampler.report()
        assert after_load.pss_reads - before.pss_reads == 1  # the new model process only
        assert after_load.scans - before.scans == 1
        s.kill_stub(pid)
        sampler.poke("unload", "cpu0", "m0")
        fp = sampler.sync()
        after_unload = sampler.report()
        assert fp is not None and fp.model_processes["cpu0"] == 1
        assert after_unload.scans == after_load.scans and after_unload.pss_reads == after_load.pss_reads
        assert after_unload.steps.get("unload", 0) >= 1


def test_server_growth_is_seen_at_a_poke_by_statm_or_by_pss(fake_root: Path, servers: list[FakeServer]) -> None:
    # Kills: a server figure not updated at a poke; server_at_poke="pss" ignored.
    s = new_server(fake_root, servers)
    for mode in ("statm", "pss"):
        with MemorySampler({"cpu0": s.pid}, server_at_poke=mode, **slow()) as sampler:
            sampler.sync()  # the first (full) reading is done
            before = sampler.report()
            s.grow(24)
            sampler.poke("unload", "cpu0", "")
            fp = sampler.sync()
            assert fp is not None and 20 * MB <= fp.server_growth_bytes["cpu0"] <= 28 * MB, mode
            read = sampler.report().pss_reads - before.pss_reads
            assert read == (1 if mode == "pss" else 0), mode


def test_a_server_that_maps_new_files_is_read_by_pss(fake_root: Path, servers: list[FakeServer]) -> None:
    # Kills: the server estimated from statm's private pages only (file pages mapped at a load,
    # as the first load maps the Python backend's libraries, would be missed: ~4 MB here).
    s = new_server(fake_root, servers)
    with MemorySampler({"cpu0": s.pid}, **slow()) as sampler:
        sampler.sync()
        before = sampler.report()
        assert s.ask("map 4") == "ok"
        sampler.poke("unload", "cpu0", "")
        fp = sampler.sync()
        assert fp is not None and fp.server_growth_bytes["cpu0"] >= 3 * MB
        assert sampler.report().pss_reads - before.pss_reads == 1


def test_every_process_is_read_within_the_interval_while_pokes_keep_coming(
    fake_root: Path, servers: list[FakeServer]
) -> None:
    # Kills: steps that leave known model processes unread (before, a process only got a
    # statm read in a step without a poke: under steady pokes its figure stayed as first read).
    s, other = new_server(fake_root, servers), new_server(fake_root, servers)
    with MemorySampler(
        {"cpu0": s.pid, "cpu1": other.pid}, interval_s=0.5, quick_interval_s=0.25, full_interval_s=60,
        keep_history=True,
    ) as sampler:
        pid = s.spawn("m0", 8)
        sampler.poke("load", "cpu0", "m0")
        first = sampler.sync()
        assert first is not None
        os.kill(pid, signal.SIGUSR1)  # the model process grows by 8 MB
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            sampler.poke("load", "cpu1", "")  # another executor poked all the time
            time.sleep(0.02)
        late = [fp for fp in sampler.history if fp.at_s >= first.at_s + 0.6]  # past one interval
        assert len(late) >= 10 and sampler.report().steps.get("quick", 0) <= 1  # poke steps only
        assert all(fp.model_bytes["cpu0"] >= first.model_bytes["cpu0"] + 7 * MB for fp in late)
        assert sampler.report().max_gap_s < 0.5


def test_a_restarted_server_is_followed_and_its_idle_read_again(fake_root: Path, servers: list[FakeServer]) -> None:
    # Kills: a sampler that keeps the pid it was given (the new server's model process is never
    # found: figure 0), an idle figure not re-read, a peak lowered by a restart.
    current = [new_server(fake_root, servers)]
    with MemorySampler({"cpu0": lambda: current[0].pid}, **slow()) as sampler:
        current[0].spawn("m0", 24)
        sampler.poke("load", "cpu0", "m0")
        assert sampler.sync() is not None
        peak = sampler.report().lifetime_peak_bytes["cpu0"]
        assert peak >= 24 * MB
        current[0].kill()
        current[0] = new_server(fake_root, servers)
        current[0].grow(4)  # the new server is larger when idle than the old one was
        sampler.restarted("cpu0")  # as the watchdog's hook: ready, nothing loaded yet
        fp = sampler.sync()
        report = sampler.report()
        assert fp is not None and fp.model_processes["cpu0"] == 0 and fp.executor_bytes("cpu0") <= 1 * MB
        assert report.restarts == {"cpu0": 1} and not report.idle_guessed
        assert abs(report.idle_bytes["cpu0"] - processes.memory(current[0].pid).pss_bytes) <= 1 * MB
        current[0].spawn("m1", 16)
        sampler.poke("load", "cpu0", "m1")
        fp = sampler.sync()
        assert fp is not None and fp.model_processes["cpu0"] == 1
        want = direct(current[0], sampler.report().idle_bytes["cpu0"])
        assert abs(fp.executor_bytes("cpu0") - want) <= 1 * MB + 0.02 * want
        assert sampler.report().lifetime_peak_bytes["cpu0"] >= peak  # never lowered
        assert sampler.servers == {"cpu0": current[0].pid}


def test_without_the_restart_hook_the_idle_comes_from_the_sampler_own_reads(
    fake_root: Path, servers: list[FakeServer]
) -> None:
    # Kills: idle kept from the old server although the new one was read while empty; a model
    # process present before any read not reported as a guessed idle.
    current = [new_server(fake_root, servers)]
    with MemorySampler({"cpu0": lambda: current[0].pid}, **slow(quick_interval_s=0.05, interval_s=0.1)) as sampler:
        old_idle = sampler.report().idle_bytes["cpu0"]
        current[0].kill()
        current[0] = new_server(fake_root, servers)
        current[0].grow(16)  # its "idle" is 16 MB larger
        time.sleep(0.3)  # the sampler reads it while it has no model process
        current[0].spawn("m0", 8)
        sampler.poke("load", "cpu0", "m0")
        fp = sampler.sync()
        report = sampler.report()
        assert report.restarts == {"cpu0": 1} and not report.idle_guessed
        assert report.idle_bytes["cpu0"] >= old_idle + 12 * MB
        assert fp is not None and fp.model_processes["cpu0"] == 1
        assert fp.server_growth_bytes["cpu0"] <= 2 * MB

    # A server seen only once a model process runs on it: the old idle figure is kept, and said.
    holder = [current[0].pid]
    with MemorySampler({"cpu0": lambda: holder[0]}, **slow()) as sampler:
        idle = sampler.report().idle_bytes["cpu0"]
        third = new_server(fake_root, servers)
        third.spawn("m1", 8)
        holder[0] = third.pid
        sampler.poke("load", "cpu0", "m1")
        fp = sampler.sync()
        report = sampler.report()
        assert report.idle_guessed == {"cpu0": 1} and report.idle_bytes["cpu0"] == idle
        assert fp is not None and fp.model_processes["cpu0"] == 1


def test_no_server_reads_zero_and_sync_needs_a_running_sampler(fake_root: Path, servers: list[FakeServer]) -> None:
    # Kills: a crash (or a stale figure) when a provider says there is no server.
    there: list[int | None] = [None]
    sampler = MemorySampler({"cpu0": lambda: there[0]}, **slow())
    assert sampler.sync() is None  # not started
    with sampler:
        fp = sampler.sync()
        assert fp is not None and fp.executor_bytes("cpu0") == 0
        s = new_server(fake_root, servers)
        s.spawn("m0", 8)
        there[0] = s.pid
        sampler.poke("load", "cpu0", "m0")
        fp = sampler.sync()
        assert fp is not None and fp.model_processes["cpu0"] == 1
        there[0] = None
        sampler.poke("unload", "cpu0", "m0")
        fp = sampler.sync()
        assert fp is not None and fp.executor_bytes("cpu0") == 0 and fp.model_processes["cpu0"] == 0
    assert sampler.sync() is None  # stopped


def test_kept_open_files_are_closed_when_processes_go_and_at_stop(
    fake_root: Path, servers: list[FakeServer]
) -> None:
    # Kills: a file descriptor leak (one per model process ever seen).
    s = new_server(fake_root, servers)
    sampler = MemorySampler({"cpu0": s.pid}, **slow()).start()
    files = sampler._files
    assert files is not None
    for _ in range(3):
        pid = s.spawn("m0", 1)
        sampler.poke("load", "cpu0", "m0")
        sampler.sync()
        s.kill_stub(pid)
        sampler.poke("unload", "cpu0", "m0")
        sampler.sync()
    assert files.open_count() <= 2  # the server's statm and smaps_rollup
    sampler.stop()
    assert files.open_count() == 0


def test_intervals_and_modes_are_checked() -> None:
    with pytest.raises(ValueError):
        MemorySampler({"cpu0": os.getpid()}, interval_s=0)
    with pytest.raises(ValueError):
        MemorySampler({"cpu0": os.getpid()}, server_at_poke="smaps")  # type: ignore[arg-type]
