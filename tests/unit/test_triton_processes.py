"""Parsing a Python-backend stub's command line and reading /proc (no server needed)."""

from __future__ import annotations

import os

from orchestrator.triton import processes

# argv of a stub as read from /proc/PID/cmdline on tritonserver 2.51 (empty last arg dropped)
STUB_ARGV = [
    "/tmp/coserve-triton-x/backends/python/triton_python_backend_stub",
    "/repo/cls_a_0/1/model.py",
    "triton_python_backend_shm_region_coserve_abc_4397041c",
    "1048576",
    "1048576",
    "3777",
    "/tmp/coserve-triton-x/backends/python",
    "336",
    "cls_a_0_0_1",
    "/tmp/coserve-triton-x/backends/coserve_ort",
]


def test_stub_cmdline_names_model_instance_and_region():
    # The model name comes from the model path, not from the (ambiguous) instance name.
    assert processes.parse_stub_cmdline(STUB_ARGV) == (
        "cls_a_0",
        "cls_a_0_0_1",
        "triton_python_backend_shm_region_coserve_abc_4397041c",
    )


def test_other_processes_are_not_stubs():
    assert processes.parse_stub_cmdline([]) is None
    assert processes.parse_stub_cmdline(["/usr/bin/python3", "-c", "pass"]) is None
    assert processes.parse_stub_cmdline(STUB_ARGV[:5]) is None


def test_proc_readers_on_this_process():
    me = os.getpid()
    assert processes.parent_pid(me) == os.getppid()
    assert processes.is_alive(me)
    mem = processes.memory(me)
    assert mem.pid == me and 0 < mem.pss_bytes <= mem.rss_bytes
    assert processes.read_cmdline(me)
    assert me in processes.children(os.getppid())


def test_gone_process_reads_as_empty():
    gone = 2**22 + 12345  # above the default pid_max range used here
    assert processes.read_cmdline(gone) == []
    assert processes.parent_pid(gone) is None
    assert not processes.is_alive(gone)
    assert processes.memory(gone) == processes.ProcessMemory(gone, 0, 0, 0)


ROLLUP = (
    b"55693d839000-7ffea1d91000 ---p 00000000 00:00 0                          [rollup]\n"
    b"Rss:               58500 kB\nPss:               44884 kB\nPss_Dirty:         35542 kB\n"
    b"Pss_Anon:          24144 kB\nShared_Clean:      22276 kB\n"
)


def test_rollup_and_statm_texts_parse():
    # Kills: matching "Pss_Dirty:"/"Pss_Anon:" for "Pss:", statm private taken as resident.
    assert processes.pss_from_rollup(ROLLUP) == 44884 * 1024
    assert processes.pss_from_rollup(b"") == 0
    assert processes.pss_from_rollup(ROLLUP.replace(b"\nPss:", b"\nXss:")) == 0
    page = os.sysconf("SC_PAGE_SIZE")
    assert processes.private_from_statm(b"730 448 421 5 0 89 0\n") == (448 - 421) * page
    assert processes.private_from_statm(b"0 0 0 0 0 0 0\n") == 0  # a zombie
    assert processes.private_from_statm(b"") == 0


def test_kept_open_proc_files_read_again_and_answer_empty_once_the_process_is_gone():
    # Kills: a cached read (pread must re-read the file), a gone process's fd kept open, a read
    # of another process that reused the pid (the open file names the process, not the pid).
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; b = bytearray(32 << 20); b[::4096] = b'1' * (8192); sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    files = processes.ProcFiles()
    try:
        first = processes.pss_from_rollup(files.read(child.pid, "smaps_rollup"))
        assert first > 0 and files.open_count() == 1
        assert processes.private_from_statm(files.read(child.pid, "statm")) > 0
        assert files.open_count() == 2
        assert processes.pss_from_rollup(files.read(child.pid, "smaps_rollup")) > 0  # read again, same fd
        assert files.open_count() == 2
    finally:
        child.kill()
        child.wait()
    assert files.read(child.pid, "smaps_rollup") == b""  # gone: ESRCH, and its fd closed
    assert files.open_count() == 1
    files.forget(child.pid)
    assert files.open_count() == 0
    assert files.read(child.pid, "statm") == b"" and files.open_count() == 0  # cannot open: nothing kept
    files.read(os.getpid(), "statm")
    files.close()
    assert files.open_count() == 0


def test_read_once_reads_and_answers_empty_for_a_gone_process():
    assert processes.read_once(f"/proc/{os.getpid()}/statm").split()
    assert processes.read_once(f"/proc/{2**22 + 12345}/statm") == b""


def test_children_lists_living_children_and_not_zombies():
    # Kills: a zombie counted as a living child, a child of another process taken for ours
    # (a parent pid matched as a prefix: "12" in "123").
    import subprocess
    import time

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in processes.children(os.getpid())
        assert child.pid not in processes.children(int(str(os.getpid())[:-1] or 1))
        child.kill()
        deadline = time.monotonic() + 5
        while processes.state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert processes.state(child.pid) == "Z"
        assert child.pid not in processes.children(os.getpid())
    finally:
        child.kill()
        child.wait()
