"""The hardened ``coserve`` CLI, end to end: every case here failed before the hardening commits.

Bad numbers and URLs are refused with one clear line (exit 2) before anything runs; an unreadable
config.pbtxt is named with its problem; a closed stdout pipe is not a traceback; ``repo status``
tells a dead model process; ``triton start`` and ``coserve repo`` agree on Triton's default ports;
a killed ``coserve triton start`` leaves no process behind, and the next start removes its files.
Real servers, real subprocesses, real signals.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.triton import launcher, processes
from orchestrator.triton.adapter import LIVE_STATES, TritonAdapter
from orchestrator.triton.launcher import EmbeddedTriton, free_port
from orchestrator.triton.model_config import ModelConfig
from tests.integration import factories
from tests.integration.test_triton_cli import ROOT, assert_clean_error, coserve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

COSERVE = [sys.executable, "-m", "orchestrator.cli"]


def unique(prefix: str) -> str:
    """A model name no other test of the shared session repository uses."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def wait_dead(pids: list[int], within_s: float) -> list[int]:
    """Wait until every pid is gone (or a zombie); returns those still alive after ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(processes.is_alive(pid) for pid in pids):
            return []
        time.sleep(0.05)
    return [pid for pid in pids if processes.is_alive(pid)]


class CliServer:
    """``coserve triton start`` as a subprocess; ``banner`` is what it printed until ready."""

    def __init__(self, repo: Path, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [*COSERVE, "triton", "start", "--repo", str(repo), *flags],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        lines: list[str] = []
        while not lines or "Ctrl-C stops the server" not in lines[-1]:
            line = self.proc.stdout.readline()
            if not line:
                _, err = self.proc.communicate(timeout=30)
                raise AssertionError(f"triton start ended before ready:\n{''.join(lines)}{err}")
            lines.append(line)
        self.banner = "".join(lines)
        [self.server_pid] = processes.children(self.proc.pid)

    @property
    def home(self) -> Path:
        """The temporary home, from the ``log <home>/tritonserver.log`` line."""
        match = re.search(r"^log (\S+)/tritonserver\.log$", self.banner, re.M)
        assert match, self.banner
        return Path(match.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


@pytest.fixture
def model_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    factories.write_model(repo, "solo", factories.make_classifier_onnx(seed=3))
    return repo


def free_ports() -> list[str]:
    return ["--grpc-port", str(free_port()), "--http-port", str(free_port()), "--metrics-port", str(free_port())]


# -- 1. numbers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, flag, problem",
    [
        (["triton", "start", "--repo", "{tmp}", "--grpc-port", "70000"], "--grpc-port", "must be in [1, 65535], got 70000"),
        (["triton", "start", "--repo", "{tmp}", "--grpc-port", "-1"], "--grpc-port", "must be in [1, 65535], got -1"),
        (["triton", "start", "--repo", "{tmp}", "--http-port", "0"], "--http-port", "must be in [1, 65535], got 0"),
        (["triton", "start", "--repo", "{tmp}", "--start-timeout", "-5"], "--start-timeout", "must be > 0"),
        (["repo", "unload", "X", "--timeout", "-1"], "--timeout", "must be > 0"),
        (["repo", "load", "X", "--count", "0"], "--count", "must be >= 1, got 0"),
    ],
)
def test_bad_numbers_are_refused_naming_the_flag(argv, flag, problem, tmp_path, capsys):
    """Before: plain int/float, so port 70000 reached tritonserver and --count 0 the server."""
    with pytest.raises(SystemExit) as exited:
        cli.main([arg.replace("{tmp}", str(tmp_path)) for arg in argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"error: argument {flag}: {problem}" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing assembled


@pytest.mark.parametrize("flag, value, problem", [("--max-resident", "0", "must be >= 1"), ("--board-seed", "-1", "must be >= 0")])
def test_demo_bad_numbers_are_refused_before_any_export(flag, value, problem, tmp_path):
    """Before: --max-resident 0 was checked after exporting the whole demo CoE; --board-seed -1 ran."""
    repo = tmp_path / "repo"
    repo.mkdir()
    began = time.monotonic()
    result = coserve("demo", "--repo", str(repo), flag, value)
    elapsed = time.monotonic() - began
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"error: argument {flag}: {problem}" in result.stderr
    assert list(repo.iterdir()) == []  # no CoE written, no model exported
    assert result.stdout == ""
    assert elapsed < 5, f"took {elapsed:.1f} s: refused only after work"


# -- 2. URLs -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url, words",
    [("http://127.0.0.1:8001", ("without a scheme", "e.g. 127.0.0.1:8001")), ("garbage:xx", ("HOST:PORT", "port in 1-65535"))],
)
@pytest.mark.parametrize(
    "command",
    [["repo", "list"], ["repo", "status"], ["repo", "load", "cls_a"], ["repo", "load", "cls_a", "--count", "2"], ["repo", "unload", "cls_a"]],
    ids=["list", "status", "load", "load-count", "unload"],
)
def test_a_malformed_url_is_one_line_about_the_url(url, words, command, tmp_path, capsys):
    """Before: an http:// URL or garbage:xx surfaced as "no such model" (or, with --count, as
    "no model 'cls_a' in repository": the URL was checked only after --repo was read)."""
    code = cli.main([*command, "--url", url, "--repo", str(tmp_path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"coserve: error: Triton URL {url!r}: "), err
    for word in words:
        assert word in lines[0]
    assert "model" not in lines[0].lower()


# -- 3. an unreadable config.pbtxt ----------------------------------------------------------------
@pytest.mark.parametrize(
    "content, words",
    [
        (b"this is { not a config\n", ("not a valid Triton model config", 'no field named "this"')),
        (b'name: "x"\nbackend: "\xff\xfe"\n', ("not UTF-8 text", "byte 0xff")),
    ],
    ids=["garbage", "not-utf8"],
)
def test_an_unreadable_config_pbtxt_is_named_with_its_problem(content, words, triton, triton_repo, unload_all):
    """Before: Triton's only words, "failed to poll from model repository" (and for the non-UTF-8
    file with --count, a UnicodeDecodeError traceback)."""
    name = unique("broken")
    model_dir = triton_repo / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes(factories.make_classifier_onnx())
    (model_dir / "config.pbtxt").write_bytes(content)
    config_path = str(model_dir / "config.pbtxt")
    try:
        with_repo = ["--url", triton.grpc_url, "--repo", str(triton_repo)]
        for extra in ([], ["--count", "2"]):
            result = coserve("repo", "load", name, *extra, *with_repo)
            assert result.returncode == 2
            assert_clean_error(result, config_path, *words)
            assert "failed to poll" not in result.stderr
        # Without --repo (./model_repository has no such model): the local server's own repository.
        result = coserve("repo", "load", name, "--url", triton.grpc_url)
        assert result.returncode == 2
        assert_clean_error(result, config_path, *words)
    finally:
        shutil.rmtree(model_dir)


# -- 4. a file where a directory belongs --------------------------------------------------------
def test_a_regular_file_as_home_or_repository_is_one_clear_line(model_repo, tmp_path):
    """Before: FileExistsError / NotADirectoryError tracebacks."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory\n")
    cases = [
        (["triton", "start", "--repo", str(model_repo), "--home", str(a_file), *free_ports()], ("--home", "not a directory")),
        (["triton", "start", "--repo", str(model_repo), "--home", str(a_file / "sub"), *free_ports()], ("Not a directory",)),
        (["demo", "--repo", str(a_file)], ("--repo", "not a directory")),
        (["demo", "--repo", str(a_file / "sub")], ("--repo", "cannot create the model repository", "Not a directory")),
    ]
    for argv, words in cases:
        result = coserve(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert_clean_error(result, str(argv[argv.index("--home" if "--home" in argv else "--repo") + 1]), *words)
        assert result.stdout == ""
    assert a_file.read_text() == "not a directory\n"


# -- 5. a closed stdout pipe ---------------------------------------------------------------------
@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_repo_status_into_a_closed_pipe_is_no_traceback(unbuffered, triton):
    """Before: a BrokenPipeError traceback (unbuffered) or Python's "Exception ignored ...
    BrokenPipeError" at exit with code 120 (block-buffered, the default for a pipe)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    status = shlex.join([*COSERVE, "repo", "status", "--url", triton.grpc_url])
    # `true` has exited long before coserve writes (a reader gone for sure); `head -1` is the
    # everyday case (gone after the first line, or after reading everything).
    script = f'{status} | true; echo "exit=${{PIPESTATUS[0]}}"; {status} | head -1; echo "exit=${{PIPESTATUS[0]}}"'
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "exit=141", result.stdout
    assert lines[1].split()[:3] == ["MODEL", "VERSION", "STATE"]
    assert lines[2] in ("exit=0", "exit=141") and len(lines) == 3, result.stdout


def test_main_into_a_closed_pipe_returns_141(triton, monkeypatch):
    """The same through ``main()``: stdout replaced by the write end of a pipe whose reader is closed."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    closed = os.fdopen(write_fd, "w")
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        assert cli.main(["repo", "status", "--url", triton.grpc_url]) == cli.EXIT_BROKEN_PIPE
    finally:
        monkeypatch.undo()
        closed.close()


# -- 6. a dead model process ---------------------------------------------------------------------
def test_repo_status_says_process_dead_and_repo_load_recovers_it(triton, triton_repo, arun, unload_all):
    """Before: `repo status` said READY for a model whose process was SIGKILLed (every request
    fails), and `repo load` of it said "loaded" in 0.00 s while it stayed dead."""
    name = unique("dead")
    model_dir = factories.write_model(triton_repo, name, factories.make_classifier_onnx(seed=5))
    where = ["--url", triton.grpc_url, "--repo", str(triton_repo)]

    def row() -> str:
        status = coserve("repo", "status", *where)
        assert status.returncode == 0, status.stderr
        return next(line for line in status.stdout.splitlines() if line.startswith(f"{name} "))

    try:
        loaded = coserve("repo", "load", name, *where)
        assert loaded.returncode == 0, loaded.stderr
        [stub] = triton.model_processes(name)
        assert re.match(rf"{name}\s+1\s+READY\s+cpu x1\s*$", row())
        os.kill(stub.pid, signal.SIGKILL)
        assert wait_dead([stub.pid], 5) == []
        assert re.match(rf"{name}\s+1\s+READY, process dead\s+cpu x1\s*$", row()), row()

        reloaded = coserve("repo", "load", name, *where)
        assert reloaded.returncode == 0, reloaded.stderr
        assert f"reloaded {name}" in reloaded.stdout and "its model process had died" in reloaded.stdout
        [fresh] = triton.model_processes(name)
        assert fresh.pid != stub.pid
        assert re.match(rf"{name}\s+1\s+READY\s+cpu x1\s*$", row())
        again = coserve("repo", "load", name, *where)  # alive: a plain load (a no-op in Triton)
        assert again.returncode == 0 and f"loaded {name}" in again.stdout and "reloaded" not in again.stdout
        assert [p.pid for p in triton.model_processes(name)] == [fresh.pid]
    finally:

        async def cleanup(adapter: TritonAdapter) -> None:
            states = [e.state for e in await adapter.index() if e.name == name]
            if "READY" in states and not triton.model_processes(name):
                await adapter.reload(name, ModelConfig.read(model_dir))
            if any(s in LIVE_STATES for s in states):
                await adapter.unload(name, timeout_s=30)

        arun(cleanup)
        shutil.rmtree(model_dir)


# -- 7. Triton's default ports -------------------------------------------------------------------
@pytest.fixture
def default_ports_free() -> None:
    busy = [p for p in (8000, 8001, 8002) if launcher.port_in_use(p)]
    if busy:
        pytest.skip(f"127.0.0.1 port(s) {busy} in use: cannot test `triton start` on Triton's default ports")


def test_triton_start_and_repo_agree_on_the_default_ports(model_repo, default_ports_free):
    """Before: `triton start` picked free ports while `coserve repo` used localhost:8001, so
    nothing worked without flags; a second start ran on other ports instead of refusing."""
    server = CliServer(model_repo)
    try:
        assert "grpc 127.0.0.1:8001  http http://127.0.0.1:8000  metrics http://127.0.0.1:8002/metrics" in server.banner
        home = server.home
        listed = coserve("repo", "list", "--repo", str(model_repo))  # no --url
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout == "solo\tNOT LOADED\n"

        second = subprocess.run(
            [*COSERVE, "triton", "start", "--repo", str(model_repo)],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )
        assert second.returncode == 2
        assert_clean_error(second, "port 8001", "already in use")
        assert second.stdout == ""

        assert server.proc.poll() is None and processes.is_alive(server.server_pid)
        loaded = coserve("repo", "load", "solo", "--repo", str(model_repo))
        assert loaded.returncode == 0, loaded.stderr
        stubs = processes.model_processes(server.server_pid)
        assert [p.model for p in stubs] == ["solo"]

        server.proc.send_signal(signal.SIGTERM)
        out, err = server.proc.communicate(timeout=30)
        assert server.proc.returncode == 0, err
        assert "stopping Triton" in out
    finally:
        server.stop()
    assert wait_dead([server.server_pid, *(p.pid for p in stubs)], 5) == []
    assert not home.exists()
    assert not launcher.port_in_use(8001)


# -- 8. stale homes and shm regions ---------------------------------------------------------------
@pytest.fixture
def shm_names() -> Iterator[list[str]]:
    """/dev/shm names the test creates; removed afterwards whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        Path("/dev/shm", name).unlink(missing_ok=True)


def test_remove_stale_removes_only_what_no_living_process_owns(tmp_path, shm_names):
    """Before: nothing removed a killed server's temporary home or /dev/shm regions."""
    done = subprocess.Popen(["true"])
    done.wait()
    dead_pid = done.pid

    def home(name: str, owner: str) -> Path:
        path = tmp_path / f"{launcher.HOME_PREFIX}{name}"
        (path / "bin").mkdir(parents=True)
        (path / launcher.OWNER_FILE).write_text(owner)
        return path

    stale = home("xyz", f"{dead_pid} 0")
    reused_pid = home("reused", f"{os.getpid()} 0")  # our pid, another start time: not us
    mine = home("mine", launcher._owner_stamp(os.getpid()))
    running = home("running", f"{dead_pid} 0")  # owner dead, but a program runs from inside it
    shutil.copy2(shutil.which("sleep") or "/bin/sleep", running / "bin" / "sleep")
    not_a_home = tmp_path / f"{launcher.HOME_PREFIX}file"
    not_a_home.write_text("")
    unrelated = tmp_path / "coserve-other"
    unrelated.mkdir()

    dead_region = f"{launcher.COSERVE_SHM_PREFIX}deadbeef0000_test"
    live_region = f"{launcher.COSERVE_SHM_PREFIX}cafe00000000_test"
    foreign_region = f"{launcher.SHM_PREFIX_BASE}notcoserve_deadbeef0000_test"  # another Triton's
    for name in (dead_region, live_region, foreign_region):
        shm_names.append(name)
        Path("/dev/shm", name).write_bytes(b"\0" * 64)

    holders = [
        subprocess.Popen(["sh", "-c", "sleep 30; :", "coserve_cafe00000000_x"]),
        subprocess.Popen([str(running / "bin" / "sleep"), "30"]),
    ]
    try:
        removed = launcher.remove_stale(tempdir=tmp_path)
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    assert not stale.exists() and not reused_pid.exists()
    assert mine.is_dir() and running.is_dir() and not_a_home.is_file() and unrelated.is_dir()
    assert not Path("/dev/shm", dead_region).exists()
    assert Path("/dev/shm", live_region).exists() and Path("/dev/shm", foreign_region).exists()
    assert {str(stale), str(reused_pid), dead_region} <= set(removed)
    assert not {str(mine), str(running), live_region, foreign_region} & set(removed)


# -- 9. kill -9 of `coserve triton start` --------------------------------------------------------
def test_a_killed_triton_start_leaves_nothing_and_the_next_start_cleans_up(model_repo):
    """Before: the server (its own session) outlived a SIGKILLed `coserve triton start` with its
    model processes, and its temporary home stayed in /tmp for good."""
    server = CliServer(model_repo, *free_ports())
    try:
        home = server.home
        grpc = re.search(r"grpc (127\.0\.0\.1:\d+)", server.banner)
        assert grpc
        loaded = coserve("repo", "load", "solo", "--count", "2", "--url", grpc.group(1), "--repo", str(model_repo))
        assert loaded.returncode == 0, loaded.stderr
        stubs = processes.model_processes(server.server_pid)
        assert len(stubs) == 2
        [prefix] = [
            arg.split("shm-region-prefix-name=", 1)[1]
            for arg in processes.read_cmdline(server.server_pid)
            if "shm-region-prefix-name=" in arg
        ]
        server.proc.kill()
        assert server.proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        server.stop()
    pids = [server.server_pid, *(p.pid for p in stubs)]
    assert wait_dead(pids, 5) == [], "processes outlived the killed coserve"

    following = EmbeddedTriton(
        model_repo, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(), start_timeout_s=60
    )
    with following:
        assert following.home != home
        assert not home.exists(), "the stale temporary home of the killed server was not removed"
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    assert following.home is None
