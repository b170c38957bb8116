"""The measured memory of embedded Triton servers, sampled while they serve.

An executor's footprint (docs/profiler.md, ``weight_bytes``) is what its experts really hold on
its own embedded server: the model (stub) processes' proportional set size (PSS) plus what the
tritonserver process's PSS grew by over its idle PSS. ``MemorySampler`` measures exactly that, per
executor (one executor per server, ``orchestrator.engine.triton_backend``), with three kinds of
reads, cheapest most often:

- **PSS** (``/proc/PID/smaps_rollup``: the kernel walks the process's page tables): ~1.1 ms for
  a ~75 MB model process, ~2.5 ms for a tritonserver holding ~25 models (its ~900 threads' stacks
  are as many mappings to walk);
- **statm** (``/proc/PID/statm``, one line, no page walk; read through files kept open, ~2 us): a
  process's figure is its last PSS plus how much its private resident pages (statm
  ``resident - shared``: its anonymous memory) changed since;
- **listing** the servers' children: ``/proc`` is listed and only pids new since the last
  listing have their ``stat`` read (a new model process is a new pid).

When:

- **at every load and unload** (``poke(event, executor, expert)``, wired to the engine's
  ``listeners``): at a load, a listing and the PSS of every model process not measured before
  (the new one); at an unload no listing (its model process has gone: its statm read fails and
  it is dropped); at both, the statm figure of every other process, the server included. With
  ``server_at_poke="pss"`` the poked executor's server PSS is read too (as before: that read
  was the largest part of what a poke cost; ``benchmarks/sampler_cost.py``, loaded box: a load
  step 1.8 ms and an unload step 0.3 ms of CPU, 3.8 ms a step with the server's PSS). What the statm figure of a server misses: a server's growth at
  a load is its anonymous memory (measured on the demo board: PSS +0.6-0.7 MB a model, statm
  private +0.75-0.85 MB), except file pages (the first load maps the Python backend's
  libraries, ~3 MB: a server whose statm ``shared`` grew by over 1 MB since its last PSS read is
  read by PSS instead) and its half of the model process's shared-memory region (~32 kB a
  model); the next full refresh re-anchors them;
- **every ``interval_s``** (default 0.9 s, so that no gap reaches 1 s) the same for every
  executor (a load still in progress or a process that died shows up here);
- **every ``full_interval_s``** (default 5 s), and when a window starts or the sampler stops, the
  PSS of every process (PSS of a process falls as others come to share its libraries, so old
  figures are re-anchored);
- in between, every ``quick_interval_s`` (default 0.25 s), statm of every known process.

Every step reads statm of every known process, so no figure is older than ``interval_s``.

**Servers that are restarted.** ``servers`` maps an executor to its server's pid, or to a
callable returning the current pid (None or 0: no server now), re-read at every step. When the
pid changes, the old server's processes are dropped (a restart kills them) and the new server's
idle PSS is read again:

- exactly, when ``restarted(executor)`` (or ``poke("restart", executor)``) is called once the
  new server is ready and before anything is loaded on it: the idle PSS is read in the caller;
- otherwise from the sampler's own reads: while the new server has no model process its PSS is
  read at every step and taken as its idle PSS (its growth reads 0); the last such read before
  its first model process appears stays. That read may fall while the server still starts
  (idle too low: growth over-stated) or while its first load is under way (idle too high: that
  load's server growth, ~1-4 MB, under-stated). If a model process is there before any read of
  the new server, the old server's idle figure is kept (``SamplerReport.idle_guessed``).

What a restart does to the figures: the restarted executor's figure falls to its server's growth
while it has no model process and comes back as the watchdog loads its set again; peaks are never
lowered (a peak seen before a restart stays, ``lifetime_peak_*`` and ``window_peak_*``). While one
server is down, another server running the same binary holds the binary's and libraries' file
pages with fewer sharers, so its PSS (and the growth it is charged with, measured against an
idle PSS read while both ran) rises until the new server maps them again: +1.4 MB measured on a
box where other tritonservers shared them too; with the two as the only sharers, up to half of
the ~30 MB of file pages a server maps (reasoned, not measured). Such a rise can set a peak that
no expert caused; it shows at the next full refresh (statm does not see file pages).

Every read gives a ``Footprint``; peaks are kept twice: over the sampler's life
(``lifetime_peak_*``: what a budget promise is checked against) and over a window that
``reset_window()`` starts (a benchmark's measured run).

It runs in its own daemon thread, so a read never stalls the event loop, and it measures its own
cost: the thread's CPU time (``time.thread_time``) over its wall time, as a share of one core
(``SamplerReport.cpu_share``; the issue's bar is 5%), also split by kind of step
(``SamplerReport.step_cpu_s``).

Contract: ``start()`` must be called while the servers hold no model (it reads their idle PSS),
unless ``idle_bytes`` are given. Linux only (procfs); a server that has gone reads as 0.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from orchestrator.triton import processes

_PAGE = os.sysconf("SC_PAGE_SIZE")

#: a server's pid, or a callable returning its current pid (None or 0 while there is none)
ServerPid = int | Callable[[], int | None]


@dataclass(frozen=True)
class Footprint:
    """One reading: per executor, the server's growth over idle and its model processes."""

    at_s: float  # seconds since the sampler started
    server_growth_bytes: Mapping[str, int]
    model_bytes: Mapping[str, int]
    model_processes: Mapping[str, int]
    kind: str = "pss"  # "pss" (PSS read where something changed) or "statm" (estimate)

    def executor_bytes(self, executor: str) -> int:
        return self.server_growth_bytes.get(executor, 0) + self.model_bytes.get(executor, 0)

    @property
    def total_bytes(self) -> int:
        return sum(self.executor_bytes(e) for e in self.server_growth_bytes)


@dataclass(frozen=True)
class SamplerReport:
    """What the sampler saw and what it cost."""

    pss_reads: int  # smaps_rollup reads (servers and model processes)
    statm_reads: int
    scans: int  # listings of the servers' children
    poked: int  # readings a load or unload asked for
    wall_s: float
    cpu_s: float  # the sampler thread's CPU time so far
    idle_bytes: Mapping[str, int]
    window_peak_total_bytes: int
    window_peak_bytes: Mapping[str, int]  # per executor, over the window
    lifetime_peak_total_bytes: int
    lifetime_peak_bytes: Mapping[str, int]  # per executor, over the sampler's life
    max_gap_s: float  # longest time between two readings
    max_pss_gap_s: float  # longest time between two listings with PSS of what changed
    #: steps by kind ("poke", "unload", "interval", "full", "quick") and the thread's CPU in each kind
    steps: Mapping[str, int] = field(default_factory=dict)
    step_cpu_s: Mapping[str, float] = field(default_factory=dict)
    #: per executor: new servers seen (pid changes to a running server: restarts), and idle
    #: figures kept from the old server (module doc)
    restarts: Mapping[str, int] = field(default_factory=dict)
    idle_guessed: Mapping[str, int] = field(default_factory=dict)

    @property
    def cpu_share(self) -> float:
        """The sampler thread's CPU time as a share of one core over its wall time."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def private_resident_bytes(pid: int) -> int:
    """Resident pages not backed by a file or shared memory (statm ``resident - shared``), 0 if gone."""
    return processes.private_from_statm(processes.read_once(f"/proc/{pid}/statm"))


#: a server whose file-backed and shared resident pages grew by more than this since its last
#: PSS read has mapped something new (the first load of a backend maps its libraries): its PSS
#: is read, not estimated (statm's private figure does not see file pages)
SERVER_SHARED_SLACK_BYTES = 1 << 20


@dataclass
class _Proc:
    pss: int  # last PSS read
    private_at_pss: int  # statm private bytes when it was read
    estimate: int  # current figure
    shared_at_pss: int = 0  # statm shared bytes when it was read


@dataclass
class _Executor:
    """What the sampler knows of one executor's server."""

    pid: int  # 0: no server now
    idle: int = 0
    server: _Proc | None = None
    procs: dict[int, _Proc] = field(default_factory=dict)
    awaiting_idle: bool = False  # a new server: its idle PSS is read until a model process appears
    idle_read: bool = False  # the idle figure was read for this pid


@dataclass
class _State:
    window_peak: dict[str, int] = field(default_factory=dict)
    window_total: int = 0
    lifetime_peak: dict[str, int] = field(default_factory=dict)
    lifetime_total: int = 0


def _provider(pid: ServerPid) -> Callable[[], int | None]:
    if callable(pid):
        return pid
    fixed = int(pid)
    return lambda: fixed


class MemorySampler:
    """Samples the footprint of each executor's server (module doc).

    ``servers`` maps executor name -> the pid of the tritonserver it runs on, or a callable
    returning the current pid (followed across restarts, module doc); ``keep_history`` keeps
    every reading in ``history`` (for diagnosis). ``on_reading(footprint, began)`` is called in
    the sampler's thread after every step with its reading and the ``clock()`` time the step
    began (its reads were made between the two): it must return at once and not raise (the
    service hands it to the event loop, ``orchestrator.serve``). ``server_at_poke``: "statm" (default) or "pss",
    how a poke reads the poked executor's server; ``reuse_fds``: keep the /proc files of known
    processes open and re-read them (default) instead of opening them at every read.
    """

    def __init__(
        self,
        servers: Mapping[str, ServerPid],
        *,
        interval_s: float = 0.9,
        full_interval_s: float = 5.0,
        quick_interval_s: float = 0.25,
        idle_bytes: Mapping[str, int] | None = None,
        keep_history: bool = False,
        clock: Callable[[], float] = time.monotonic,
        server_at_poke: Literal["statm", "pss"] = "statm",
        reuse_fds: bool = True,
        on_reading: Callable[[Footprint, float], None] | None = None,
    ) -> None:
        if min(interval_s, full_interval_s, quick_interval_s) <= 0:
            raise ValueError("intervals must be > 0")
        if server_at_poke not in ("statm", "pss"):
            raise ValueError(f"server_at_poke must be 'statm' or 'pss', not {server_at_poke!r}")
        self._providers = {ex: _provider(pid) for ex, pid in servers.items()}
        self._ex = {ex: _Executor(self._current(ex)) for ex in self._providers}
        self.interval_s = interval_s
        self.full_interval_s = max(full_interval_s, interval_s)
        self.quick_interval_s = min(quick_interval_s, interval_s)
        self.server_at_poke = server_at_poke
        self._files = processes.ProcFiles() if reuse_fds else None
        for ex, given in (idle_bytes or {}).items():
            if ex in self._ex:
                self._ex[ex].idle, self._ex[ex].idle_read = given, True
        self._clock = clock
        self._lock = threading.Lock()
        self._synced = threading.Condition(self._lock)
        self._state = _State()
        self._wake = threading.Event()
        self._poked: set[str] = set()
        self._poked_loads = False  # a poke other than an unload came since the last step
        self._restarted: dict[str, tuple[int, int]] = {}  # executor -> (new pid, its idle PSS)
        self._full_due = False
        self._asked = 0  # sync() requests made
        self._answered = 0  # of them, answered by a finished step
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._t_end: float | None = None
        self._cpu_s = 0.0
        self._counts = {"pss": 0, "statm": 0, "scans": 0, "poked": 0}
        self._steps: dict[str, int] = {}
        self._step_cpu: dict[str, float] = {}
        self._restarts: dict[str, int] = {}
        self._idle_guessed: dict[str, int] = {}
        self._stubs: set[int] = set()  # pids known to be model processes
        self._seen: dict[int, int] = {}  # pid -> its parent if a server's model process, else 0
        self._last_read = 0.0
        self._last_pss = 0.0
        self._last_full = 0.0
        self._max_gap = 0.0
        self._max_pss_gap = 0.0
        self._last_fp: Footprint | None = None
        #: every reading, in order (only with ``keep_history``)
        self.history: list[Footprint] = []
        self._keep_history = keep_history
        self._on_reading = on_reading

    @property
    def servers(self) -> dict[str, int]:
        """Executor -> the server pid the sampler reads now (0: none)."""
        return {ex: st.pid for ex, st in self._ex.items()}

    def _current(self, executor: str) -> int:
        try:
            return int(self._providers[executor]() or 0)
        except Exception:  # noqa: BLE001 - a provider that fails reads as "no server now"
            return 0

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> MemorySampler:
        """Read the idle PSS (unless given), take a first reading and start the thread."""
        for st in self._ex.values():
            if not st.idle_read and st.pid:
                st.idle, st.idle_read = processes.memory(st.pid).pss_bytes, True
        self._t0 = self._clock()
        self._last_read = self._last_pss = self._last_full = self._t0
        self._thread = threading.Thread(target=self._run, name="coserve-memory-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> SamplerReport:
        """Stop the thread (after one last full reading) and return the report. Idempotent."""
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
            self._t_end = self._clock()
            if self._files is not None:
                self._files.close()
        return self.report()

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- API ----------------------------------------------------------------------------------
    def poke(self, event: str = "", executor: str | None = None, expert: str = "") -> None:
        """A load or unload was confirmed on ``executor`` (None: any): read what changed now.
        Thread-safe, returns at once; has the engine listener's signature ``(event, executor,
        expert)``. ``event == "restart"`` is ``restarted(executor)`` (it reads one PSS first)."""
        if event == "restart":
            self.restarted(executor)
            return
        with self._lock:
            if executor in self._ex:
                self._poked.add(executor)
            else:
                self._poked.update(self._ex)
            if event != "unload":
                self._poked_loads = True
        self._wake.set()

    def restarted(self, executor: str | None = None) -> None:
        """``executor``'s server (None: every executor's) was started again and holds no model
        yet: its pid is read from its provider and its idle PSS read now, in the caller (one
        smaps_rollup read, ~1 ms on an idle server); the sampler thread takes both at its next
        step. Call it after the new server is ready and before anything is loaded on it."""
        for ex in [executor] if executor is not None else list(self._ex):
            if ex not in self._ex:
                continue
            pid = self._current(ex)
            idle = processes.memory(pid).pss_bytes if pid else 0
            with self._lock:
                self._restarted[ex] = (pid, idle)
        self._wake.set()

    def sync(self, timeout_s: float = 5.0) -> Footprint | None:
        """Wait until the sampler has finished a step begun after this call (so every poke made
        before it is read) and return that step's reading; None if none came within
        ``timeout_s`` (or the sampler is not running)."""
        with self._lock:
            if self._thread is None:
                return None
            self._asked += 1
            wanted = self._asked
            self._wake.set()
            if not self._synced.wait_for(lambda: self._answered >= wanted, timeout_s):
                return None
            return self._last_fp

    def reset_window(self) -> None:
        """Start a new window for ``report().window_peak_*`` (the lifetime peaks are kept); the
        window starts with a full PSS reading."""
        with self._lock:
            self._state.window_peak = {}
            self._state.window_total = 0
            self._full_due = True
        self._wake.set()

    def report(self) -> SamplerReport:
        end = self._t_end if self._t_end is not None else self._clock()
        with self._lock:
            st = self._state
            return SamplerReport(
                pss_reads=self._counts["pss"],
                statm_reads=self._counts["statm"],
                scans=self._counts["scans"],
                poked=self._counts["poked"],
                wall_s=max(0.0, end - self._t0),
                cpu_s=self._cpu_s,
                idle_bytes={ex: e.idle for ex, e in self._ex.items()},
                window_peak_total_bytes=st.window_total,
                window_peak_bytes=dict(st.window_peak),
                lifetime_peak_total_bytes=st.lifetime_total,
                lifetime_peak_bytes=dict(st.lifetime_peak),
                max_gap_s=self._max_gap,
                max_pss_gap_s=self._max_pss_gap,
                steps=dict(self._steps),
                step_cpu_s=dict(self._step_cpu),
                restarts=dict(self._restarts),
                idle_guessed=dict(self._idle_guessed),
            )

    # -- reading ------------------------------------------------------------------------------
    def _read(self, pid: int, name: str) -> bytes:
        if self._files is not None:
            return self._files.read(pid, name)
        return processes.read_once(f"/proc/{pid}/{name}")

    def _pss(self, pid: int) -> _Proc:
        self._counts["pss"] += 1
        pss = processes.pss_from_rollup(self._read(pid, "smaps_rollup"))
        resident, shared = processes.statm_bytes(self._read(pid, "statm"))
        return _Proc(pss, max(0, resident - shared), pss, shared)

    def _read_server(self, st: _Executor, pss: bool) -> None:
        """The server's figure: PSS when asked (or never read), else statm, unless its shared
        pages grew (``SERVER_SHARED_SLACK_BYTES``): then PSS."""
        srv = st.server
        if not pss and srv is not None:
            self._counts["statm"] += 1
            resident, shared = processes.statm_bytes(self._read(st.pid, "statm"))
            if shared - srv.shared_at_pss <= SERVER_SHARED_SLACK_BYTES:
                now = max(0, resident - shared)
                srv.estimate = 0 if resident == 0 else max(0, srv.pss + now - srv.private_at_pss)
                return
        st.server = self._pss(st.pid)

    def _statm(self, pid: int, proc: _Proc) -> bool:
        """``proc``'s figure from statm: its last PSS plus the change of its private pages; False
        if the process has gone (its figure is then 0)."""
        self._counts["statm"] += 1
        text = self._read(pid, "statm")
        now = processes.private_from_statm(text)
        proc.estimate = 0 if now == 0 else max(0, proc.pss + now - proc.private_at_pss)
        return bool(text)

    def _forget(self, pid: int) -> None:
        if self._files is not None:
            self._files.forget(pid)

    def _children(self, complete: bool = False) -> dict[int, list[int]]:
        """Server pid -> its living model processes. Incremental: ``/proc`` is listed (cheap) and
        only processes not seen by the last listing have their ``stat`` read (a new model process is
        a new pid); ``complete`` reads every process again (the full refresh: a pid seen as some
        other process and reused by a model process in between is found there)."""
        self._counts["scans"] += 1
        wanted = {st.pid for st in self._ex.values() if st.pid}
        listed = {int(e) for e in os.listdir("/proc") if e.isdigit()}
        if complete:
            self._seen.clear()
        for pid in list(self._seen):
            if pid not in listed:
                del self._seen[pid]
                self._stubs.discard(pid)
        for pid in listed - self._seen.keys():
            stat = processes.read_once(f"/proc/{pid}/stat")
            if not stat:
                continue
            rest = stat[stat.rfind(b")") + 2 :].split()
            parent = int(rest[1]) if len(rest) > 1 else 0
            if parent not in wanted or rest[0] == b"Z":
                self._seen[pid] = 0
                continue
            if processes.parse_stub_cmdline(processes.read_cmdline(pid)) is None:
                continue  # a server's child not (yet) a stub: looked at again next time
            self._stubs.add(pid)
            self._seen[pid] = parent
        found: dict[int, list[int]] = {pid: [] for pid in wanted}
        for pid in self._stubs:
            parent = self._seen.get(pid, 0)
            if parent in found:
                found[parent].append(pid)
        return found

    def _follow_servers(self, restarted: Mapping[str, tuple[int, int]]) -> None:
        """Re-read every provider; a server that changed loses its processes (module doc)."""
        for ex, st in self._ex.items():
            given = restarted.get(ex)
            pid = given[0] if given is not None else self._current(ex)
            if pid != st.pid:
                if pid:  # a new server (a restart passes through "none" while it has none)
                    self._restarts[ex] = self._restarts.get(ex, 0) + 1
                for old in [*st.procs, st.pid]:
                    self._forget(old)
                    self._stubs.discard(old)
                # every process is looked at again: one listed before the sampler knew the new
                # pid was taken for some other process's child (a one-off ~1-2 ms of stat reads)
                self._seen.clear()
                st.pid, st.server, st.procs = pid, None, {}
                st.awaiting_idle, st.idle_read = bool(pid), False
            if given is not None and given[0] == st.pid:
                st.idle, st.idle_read, st.awaiting_idle = given[1], True, False

    def _refresh(self, poked: set[str], everything: bool) -> None:
        """A listing; PSS of new model processes (of every process with ``everything``) and of
        ``poked`` executors' servers when ``server_at_poke == "pss"``; statm of everything else;
        gone processes are dropped."""
        kids = self._children(complete=everything)
        for ex, st in self._ex.items():
            if not st.pid:
                continue
            live = set(kids.get(st.pid, []))
            for pid in list(st.procs):
                if pid not in live:
                    del st.procs[pid]
                    self._forget(pid)
            for pid in live:
                known = st.procs.get(pid)
                if everything or known is None:
                    st.procs[pid] = self._pss(pid)
                else:
                    self._statm(pid, known)
            if st.awaiting_idle:
                if not live:
                    st.server = self._pss(st.pid)
                    st.idle, st.idle_read = st.server.pss, True
                    continue
                st.awaiting_idle = False
                if not st.idle_read:  # a model process came before any read of the new server
                    self._idle_guessed[ex] = self._idle_guessed.get(ex, 0) + 1
            self._read_server(st, everything or (ex in poked and self.server_at_poke == "pss"))
        self._last_pss = self._clock()

    def _estimate(self) -> None:
        """statm of every known process: its last PSS plus the change of its private pages; a
        model process that has gone is dropped (an unload needs no listing: what it changed is
        a process gone and the server's private pages)."""
        for st in self._ex.values():
            for pid, proc in list(st.procs.items()):
                if not self._statm(pid, proc):
                    del st.procs[pid]
                    self._forget(pid)
            if st.server is not None and st.pid:
                self._read_server(st, False)

    def _record(self, kind: str) -> Footprint:
        now = self._clock()
        growth, models, counts = {}, {}, {}
        for ex, st in self._ex.items():
            srv = st.server
            growth[ex] = max(0, srv.estimate - st.idle) if srv is not None and srv.estimate and st.pid else 0
            models[ex] = sum(p.estimate for p in st.procs.values())
            counts[ex] = len(st.procs)
        fp = Footprint(now - self._t0, growth, models, counts, kind)
        with self._lock:
            state = self._state
            for ex in self._ex:
                b = fp.executor_bytes(ex)
                state.window_peak[ex] = max(state.window_peak.get(ex, 0), b)
                state.lifetime_peak[ex] = max(state.lifetime_peak.get(ex, 0), b)
            state.window_total = max(state.window_total, fp.total_bytes)
            state.lifetime_total = max(state.lifetime_total, fp.total_bytes)
            if self._keep_history:
                self.history.append(fp)
            self._last_fp = fp
        self._max_gap = max(self._max_gap, now - self._last_read)
        self._last_read = now
        return fp

    def _step(self, final: bool = False) -> None:
        with self._lock:
            poked, self._poked = self._poked, set()
            loads, self._poked_loads = self._poked_loads, False
            restarted, self._restarted = self._restarted, {}
            full, self._full_due = self._full_due or final, False
            asked = self._asked
        began = time.thread_time()
        began_at = self._clock()
        self._follow_servers(restarted)
        if poked:
            self._counts["poked"] += 1
        now = self._clock()
        if full or now - self._last_full >= self.full_interval_s:
            kind = "full"
            self._refresh(set(), everything=True)
            self._last_full = self._clock()
        elif now - self._last_pss >= self.interval_s:
            kind = "interval"
            self._refresh(poked, everything=False)
        elif loads or restarted or (poked and self.server_at_poke == "pss"):
            kind = "poke"
            self._refresh(poked, everything=False)
        elif poked:  # unloads only: no listing (module doc)
            kind = "unload"
            self._estimate()
        else:
            kind = "quick"
            self._estimate()
        fp = self._record("statm" if kind == "quick" else "pss")
        if self._on_reading is not None:
            self._on_reading(fp, began_at)
        spent = time.thread_time() - began
        with self._lock:
            self._steps[kind] = self._steps.get(kind, 0) + 1
            self._step_cpu[kind] = self._step_cpu.get(kind, 0.0) + spent
            self._answered = max(self._answered, asked)
            self._synced.notify_all()

    def _run(self) -> None:
        began = time.thread_time()
        try:
            self._refresh(set(), everything=True)
            self._record("pss")
            last_server_pss = self._clock()
            while not self._stop.is_set():
                due = min(self._last_read + self.quick_interval_s, self._last_pss + self.interval_s)
                self._wake.wait(max(0.0, due - self._clock()))
                self._wake.clear()
                if self._stop.is_set():
                    break
                self._step()
                if self._last_pss != last_server_pss:
                    self._max_pss_gap = max(self._max_pss_gap, self._last_pss - last_server_pss)
                    last_server_pss = self._last_pss
                self._cpu_s = time.thread_time() - began
            self._step(final=True)
        finally:
            self._cpu_s = time.thread_time() - began
            with self._lock:
                self._answered = self._asked  # nothing more will come: waiting sync() calls return
                self._synced.notify_all()
