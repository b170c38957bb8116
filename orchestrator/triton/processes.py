"""Inspecting a tritonserver's processes through /proc (Linux only).

Each Python-backend model instance runs in its own ``triton_python_backend_stub`` process, a child
of tritonserver. Its command line (checked on 2.51 by reading /proc/PID/cmdline) is::

    <home>/backends/python/triton_python_backend_stub <repo>/<model>/<version>/model.py
        <shm region name> <shm default size> <shm growth size> <parent (server) pid>
        <python backend dir> <ipc handle> <instance name> <runtime model dir> ''

where ``<instance name>`` is ``<model>_<group index>_<instance index>`` for unnamed instance groups
and ``<runtime model dir>`` is the *backend's* directory for Python-based backends
(``<home>/backends/coserve_ort``), so it does not name the model. The model name comes from the
first argument, ``<repo>/<model>/<version>/model.py``, even though that file does not exist for a
Python-based backend (the instance name alone is ambiguous: ``a_0_0`` could be model ``a`` or
``a_0``). Memory numbers come from /proc/PID/smaps_rollup: RSS counts every page
a process maps (shared libraries too), PSS divides shared pages among their sharers, so PSS sums
over processes without double counting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STUB_NAME = "triton_python_backend_stub"
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessMemory:
    """Memory of one process in bytes (0 when the process has gone)."""

    pid: int
    rss_bytes: int
    pss_bytes: int
    uss_bytes: int = 0  # private pages only (what the process alone holds)


@dataclass(frozen=True)
class ModelProcess:
    """One Python-backend stub process serving one instance of a model."""

    pid: int
    model: str
    instance: str
    rss_bytes: int
    pss_bytes: int
    shm_region: str  # name of its /dev/shm region (without the leading slash)
    uss_bytes: int = 0


def read_cmdline(pid: int) -> list[str]:
    """The process's argv, or [] if it has gone (or is a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def parent_pid(pid: int) -> int | None:
    """The parent pid from /proc/PID/stat, or None if the process has gone."""
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def is_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    return state(pid) not in (None, "Z")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def state(pid: int) -> str | None:
    """The process state letter (R, S, D, T = stopped, Z = zombie, ...), or None if gone."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def start_time(pid: int) -> int | None:
    """Start time of the process in clock ticks since boot (tells a reused pid apart)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def all_cmdlines() -> list[list[str]]:
    """The argv of every living process this user can read (for ownership checks)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            argv = read_cmdline(int(entry))
            if argv:
                found.append(argv)
    return found


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (living ones only, not zombies).

    One ``stat`` read per process (``read_once``, no file object): the adapter's process probe
    lists a server's children several times per load and unload, on the event loop (~1.1 ms
    for ~140 processes here, 2.4 ms when each was read twice through ``Path.read_text``)."""
    result = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = read_once(f"/proc/{entry}/stat")
        rest = stat[stat.rfind(b")") + 2 :].split()  # the command name may hold ") "
        if len(rest) > 1 and rest[1] == str(pid).encode() and rest[0] != b"Z":
            result.append(int(entry))
    return sorted(result)


def memory(pid: int) -> ProcessMemory:
    """RSS, PSS and USS of a process from /proc/PID/smaps_rollup (zeros if it has gone)."""
    values = {"Rss:": 0, "Pss:": 0, "Private_Clean:": 0, "Private_Dirty:": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                parts = line.split()
                if parts and parts[0] in values:
                    values[parts[0]] = int(parts[1]) * 1024  # reported in kB
    except OSError:
        pass
    uss = values["Private_Clean:"] + values["Private_Dirty:"]
    return ProcessMemory(pid, values["Rss:"], values["Pss:"], uss)


def pss_from_rollup(text: bytes) -> int:
    """The ``Pss:`` figure of a ``/proc/PID/smaps_rollup`` text in bytes (0 if it has none)."""
    at = text.find(b"\nPss:")
    if at < 0:
        return 0
    fields = text[at + 5 : text.find(b"\n", at + 5)].split()
    try:
        return int(fields[0]) * 1024  # reported in kB
    except (IndexError, ValueError):
        return 0


def statm_bytes(text: bytes) -> tuple[int, int]:
    """(resident, shared) bytes of a ``/proc/PID/statm`` text, (0, 0) if unreadable. ``shared``
    is the resident file-backed and shared-memory pages."""
    fields = text.split()
    try:
        return int(fields[1]) * _PAGE, int(fields[2]) * _PAGE
    except (IndexError, ValueError):
        return 0, 0


def private_from_statm(text: bytes) -> int:
    """Private resident bytes (``resident - shared``) of a ``/proc/PID/statm`` text, 0 if unreadable:
    the resident anonymous memory, what a process's own allocations hold, read without a page walk."""
    resident, shared = statm_bytes(text)
    return max(0, resident - shared)


class ProcFiles:
    """``/proc/PID/<name>`` files kept open and re-read with ``pread`` (one system call per read
    instead of open, read and close), for a sampler that reads the same few files many times.

    An open file names one process, not a pid: once that process has exited a read fails
    (``ESRCH``, or a zombie's zeros) and is answered with ``b""``; it never reads another process
    that got the same pid. ``forget(pid)`` closes a process's files (call it when the process is
    gone, or they stay open until ``close()``); not thread-safe (one reader thread).
    """

    def __init__(self) -> None:
        self._fds: dict[tuple[int, str], int] = {}

    def read(self, pid: int, name: str) -> bytes:
        """The file's text, ``b""`` when the process (or the file) is gone."""
        key = (pid, name)
        fd = self._fds.get(key)
        try:
            if fd is None:
                fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
                self._fds[key] = fd
            return os.pread(fd, 16384, 0)  # smaps_rollup is ~1 KB, statm one line
        except OSError:
            self._close(key)
            return b""

    def _close(self, key: tuple[int, str]) -> None:
        fd = self._fds.pop(key, None)
        if fd is not None:
            os.close(fd)

    def forget(self, pid: int) -> None:
        for key in [k for k in self._fds if k[0] == pid]:
            self._close(key)

    def open_count(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        for key in list(self._fds):
            self._close(key)


def read_once(path: str) -> bytes:
    """A /proc file's text read once (os.open/read/close: no buffered file object), ``b""`` if gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.read(fd, 16384)
    except OSError:
        return b""
    finally:
        os.close(fd)


def rss_bytes(pid: int) -> int:
    """Resident set size from /proc/PID/statm: a cheap read (no page walk), 0 if gone."""
    try:
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark of ``pid`` (``/proc/PID/clear_refs`` <- 5); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size since start or the last ``reset_peak_rss`` (VmHWM), 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def parse_stub_cmdline(argv: list[str]) -> tuple[str, str, str] | None:
    """(model, instance, shm region) from a stub's argv, or None if it is not a stub."""
    if not argv or os.path.basename(argv[0]) != STUB_NAME or len(argv) < 9:
        return None
    model = os.path.basename(os.path.dirname(os.path.dirname(argv[1])))
    return model, argv[8], argv[2].lstrip("/")


def model_processes(server_pid: int, model: str | None = None) -> list[ModelProcess]:
    """The server's living stub processes (optionally only those of ``model``), sorted by instance."""
    found = []
    for pid in children(server_pid):
        parsed = parse_stub_cmdline(read_cmdline(pid))
        if parsed is None:
            continue
        name, instance, shm = parsed
        if model is not None and name != model:
            continue
        mem = memory(pid)
        found.append(ModelProcess(pid, name, instance, mem.rss_bytes, mem.pss_bytes, shm, mem.uss_bytes))
    return sorted(found, key=lambda p: (p.model, p.instance))


def find_local_server(grpc_url: str) -> int | None:
    """Pid of a tritonserver on this machine serving gRPC at ``grpc_url`` (``host:port`` on
    loopback or localhost), or None (a remote URL, or no such process visible to this user)."""
    host, _, port_text = grpc_url.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "0.0.0.0", "[::1]", "::1") or not port_text.isdigit():
        return None
    flag = f"--grpc-port={int(port_text)}"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = read_cmdline(int(entry))
        if argv and os.path.basename(argv[0]) == "tritonserver" and flag in argv and is_alive(int(entry)):
            return int(entry)
    return None


def stubs_with_prefix(prefix: str) -> list[int]:
    """Living stub processes whose /dev/shm region starts with ``prefix`` (one server's stubs),
    found by command line, so also after their server died and they were reparented."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        parsed = parse_stub_cmdline(read_cmdline(int(entry)))
        if parsed is not None and parsed[2].startswith(prefix) and is_alive(int(entry)):
            found.append(int(entry))
    return sorted(found)
