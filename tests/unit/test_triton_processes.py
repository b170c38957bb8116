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
