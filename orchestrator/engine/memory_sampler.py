"""The measured memory of embedded Triton servers, sampled while they serve.

An executor's footprint (docs/profiler.md, ``weight_bytes``) is what its experts really hold on
its own embedded server: the model (stub) processes' proportional set size (PSS) plus what the
tritonserver process's PSS grew by over its idle PSS. ``MemorySampler`` measures exactly that, per
executor (one executor per server, ``orchestrator.engine.triton_backend``), with three kinds of
reads, cheapest most often:

- **at every load and unload** (``poke(event, executor, expert)``, wired to the engine's
  ``listeners``): the server's children are listed, the PSS (``/proc/PID/smaps_rollup``, through
  ``orchestrator.triton.processes``) of that executor's server and of every model process not
  measured before is read, processes that have gone are dropped (the listing is incremental:
  only pids new since the last one are looked at);
- **every ``interval_s``** (default 0.9 s, so that no gap reaches 1 s) the same for every executor (a load still in progress
  or a process that died shows up here);
- **every ``full_interval_s``** (default 5 s), and when a window starts or the sampler stops, the
  PSS of every process (PSS of a process falls as others come to share its libraries, so old
  figures are re-anchored);
- in between, every ``quick_interval_s`` (default 0.25 s), ``/proc/PID/statm`` of every known
  process (one line, no page walk): a process's figure is its last PSS plus how much its private
  resident pages (statm ``resident - shared``) changed since.

Reading a model process's PSS costs the kernel a page-table walk (~1.5 ms for a ~40 MB process
here), so reading all of them at every load would cost more than the 5% of a core allowed; the
scheme above reads PSS only where a load or unload changed something.

Every read gives a ``Footprint``; peaks are kept twice: over the sampler's life
(``lifetime_peak_*``: what a budget promise is checked against) and over a window that
``reset_window()`` starts (a benchmark's measured run).

It runs in its own daemon thread, so a read never stalls the event loop, and it measures its own
cost: the thread's CPU time (``time.thread_time``) over its wall time, as a share of one core
(``SamplerReport.cpu_share``; the issue's bar is 5%).

Contract: ``start()`` must be called while the servers hold no model (it reads their idle PSS),
unless ``idle_bytes`` are given. Linux only (procfs); a server that has gone reads as 0.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from orchestrator.triton import processes

_PAGE = os.sysconf("SC_PAGE_SIZE")


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
    cpu_s: float
    idle_bytes: Mapping[str, int]
    window_peak_total_bytes: int
    window_peak_bytes: Mapping[str, int]  # per executor, over the window
    lifetime_peak_total_bytes: int
    lifetime_peak_bytes: Mapping[str, int]  # per executor, over the sampler's life
    max_gap_s: float  # longest time between two readings
    max_pss_gap_s: float  # longest time between two PSS readings of the servers

    @property
    def cpu_share(self) -> float:
        """The sampler thread's CPU time as a share of one core over its wall time."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def private_resident_bytes(pid: int) -> int:
    """Resident pages not backed by a file or shared memory (statm ``resident - shared``), 0 if gone."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            fields = fh.read().split()
        return max(0, int(fields[1]) - int(fields[2])) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class _Proc:
    pss: int  # last PSS read
    private_at_pss: int  # statm private bytes when it was read
    estimate: int  # current figure


@dataclass
class _State:
    window_peak: dict[str, int] = field(default_factory=dict)
    window_total: int = 0
    lifetime_peak: dict[str, int] = field(default_factory=dict)
    lifetime_total: int = 0


class MemorySampler:
    """Samples the footprint of each executor's server (module doc).

    ``servers`` maps executor name -> the pid of the tritonserver it runs on; ``keep_history``
    keeps every reading in ``history`` (for diagnosis).
    """

    def __init__(
        self,
        servers: Mapping[str, int],
        *,
        interval_s: float = 0.9,
        full_interval_s: float = 5.0,
        quick_interval_s: float = 0.25,
        idle_bytes: Mapping[str, int] | None = None,
        keep_history: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(interval_s, full_interval_s, quick_interval_s) <= 0:
            raise ValueError("intervals must be > 0")
        self.servers = dict(servers)
        self.interval_s = interval_s
        self.full_interval_s = max(full_interval_s, interval_s)
        self.quick_interval_s = min(quick_interval_s, interval_s)
        self._idle: dict[str, int] = dict(idle_bytes or {})
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State()
        self._wake = threading.Event()
        self._poked: set[str] = set()
        self._full_due = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._t_end: float | None = None
        self._cpu_s = 0.0
        self._counts = {"pss": 0, "statm": 0, "scans": 0, "poked": 0}
        self._procs: dict[str, dict[int, _Proc]] = {ex: {} for ex in self.servers}
        self._server: dict[str, _Proc] = {}
        self._stubs: set[int] = set()  # pids known to be model processes
        self._seen: dict[int, int] = {}  # pid -> its parent if a server, else 0 (last listing)
        self._last_read = 0.0
        self._last_pss = 0.0
        self._last_full = 0.0
        self._max_gap = 0.0
        self._max_pss_gap = 0.0
        #: every reading, in order (only with ``keep_history``)
        self.history: list[Footprint] = []
        self._keep_history = keep_history

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> MemorySampler:
        """Read the idle PSS (unless given), take a first reading and start the thread."""
        for ex, pid in self.servers.items():
            if ex not in self._idle:
                self._idle[ex] = processes.memory(pid).pss_bytes
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
        return self.report()

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- API ----------------------------------------------------------------------------------
    def poke(self, event: str = "", executor: str | None = None, expert: str = "") -> None:
        """A load or unload was confirmed on ``executor`` (None: any): read its PSS now. Thread-safe,
        returns at once; has the engine listener's signature ``(event, executor, expert)``."""
        with self._lock:
            if executor in self.servers:
                self._poked.add(executor)
            else:
                self._poked.update(self.servers)
        self._wake.set()

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
                idle_bytes=dict(self._idle),
                window_peak_total_bytes=st.window_total,
                window_peak_bytes=dict(st.window_peak),
                lifetime_peak_total_bytes=st.lifetime_total,
                lifetime_peak_bytes=dict(st.lifetime_peak),
                max_gap_s=self._max_gap,
                max_pss_gap_s=self._max_pss_gap,
            )

    # -- reading ------------------------------------------------------------------------------
    def _pss(self, pid: int) -> _Proc:
        self._counts["pss"] += 1
        pss = processes.memory(pid).pss_bytes
        private = private_resident_bytes(pid)
        return _Proc(pss, private, pss)

    def _children(self, complete: bool = False) -> dict[int, list[int]]:
        """Server pid -> its living model processes. Incremental: ``/proc`` is listed (cheap) and
        only processes not seen by the last listing have their ``stat`` read (a new model process is
        a new pid); ``complete`` reads every process again (the full refresh)."""
        self._counts["scans"] += 1
        wanted = set(self.servers.values())
        listed = {int(e) for e in os.listdir("/proc") if e.isdigit()}
        if complete:
            self._seen.clear()
        for pid in list(self._seen):
            if pid not in listed:
                del self._seen[pid]
                self._stubs.discard(pid)
        for pid in listed - self._seen.keys():
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            rest = stat[stat.rfind(")") + 2 :].split()
            parent = int(rest[1]) if len(rest) > 1 else 0
            if parent not in wanted or rest[0] == "Z":
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

    def _refresh(self, executors: set[str], everything: bool) -> None:
        """PSS of ``executors``' servers and of their new model processes (every process with
        ``everything``); gone processes are dropped."""
        kids = self._children(complete=everything)
        for ex in executors:
            server = self.servers[ex]
            self._server[ex] = self._pss(server)
            live = set(kids.get(server, []))
            known = self._procs[ex]
            for pid in list(known):
                if pid not in live:
                    del known[pid]
            for pid in live:
                if everything or pid not in known:
                    known[pid] = self._pss(pid)
        self._last_pss = self._clock()

    def _estimate(self) -> None:
        """statm of every known process: its last PSS plus the change of its private pages."""
        for ex in self.servers:
            for pid, proc in [*self._procs[ex].items(), (self.servers[ex], self._server.get(ex))]:
                if proc is None:
                    continue
                self._counts["statm"] += 1
                now = private_resident_bytes(pid)
                proc.estimate = 0 if now == 0 else max(0, proc.pss + now - proc.private_at_pss)

    def _record(self, kind: str) -> Footprint:
        now = self._clock()
        growth, models, counts = {}, {}, {}
        for ex in self.servers:
            srv = self._server.get(ex)
            growth[ex] = max(0, srv.estimate - self._idle.get(ex, 0)) if srv is not None and srv.estimate else 0
            models[ex] = sum(p.estimate for p in self._procs[ex].values())
            counts[ex] = len(self._procs[ex])
        fp = Footprint(now - self._t0, growth, models, counts, kind)
        with self._lock:
            st = self._state
            for ex in self.servers:
                b = fp.executor_bytes(ex)
                st.window_peak[ex] = max(st.window_peak.get(ex, 0), b)
                st.lifetime_peak[ex] = max(st.lifetime_peak.get(ex, 0), b)
            st.window_total = max(st.window_total, fp.total_bytes)
            st.lifetime_total = max(st.lifetime_total, fp.total_bytes)
            if self._keep_history:
                self.history.append(fp)
        self._max_gap = max(self._max_gap, now - self._last_read)
        self._last_read = now
        return fp

    def _step(self, final: bool = False) -> None:
        with self._lock:
            poked, self._poked = self._poked, set()
            full, self._full_due = self._full_due or final, False
        if poked:
            self._counts["poked"] += 1
        now = self._clock()
        if full or now - self._last_full >= self.full_interval_s:
            self._refresh(set(self.servers), everything=True)
            self._last_full = self._clock()
        elif now - self._last_pss >= self.interval_s:
            self._refresh(set(self.servers), everything=False)
        elif poked:
            self._refresh(poked, everything=False)
        else:
            self._estimate()
            self._record("statm")
            return
        self._record("pss")

    def _run(self) -> None:
        began = time.thread_time()
        try:
            self._refresh(set(self.servers), everything=True)
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
            self._step(final=True)
        finally:
            self._cpu_s = time.thread_time() - began
