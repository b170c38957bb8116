"""The durable verdict log: one SQLite file in WAL mode.

Why SQLite (stdlib ``sqlite3``) and not append-only JSONL: a retry needs a point lookup by
(board id, component id) and ``coserve verdicts`` a range by board and time (indexes, not a scan
or an in-memory index rebuilt at every start); retention is a ``DELETE`` whose pages are reused
(no rewrite of a whole file); a commit is atomic, so a process killed mid-write leaves the last
committed transaction, never a torn line; the learned usage probabilities live in the same file;
and a CLI can read while the service writes (WAL readers do not block the writer).

Contract of ``VerdictStore``:

- ``await append(verdict)`` returns once the record is committed. Records appended in the same
  event-loop iteration share one transaction (group commit), committed by a callback on the
  loop at the next iteration: a WAL commit without fsync is a ``write()`` into the OS, tens of
  microseconds, cheaper on the loop than any hand-off to a thread (a thread wake-up on a loaded
  machine costs milliseconds: measured in ``benchmarks/serve_overhead.py``). With
  ``sync="normal"`` that is all: the record survives a killed process, not a power cut. With
  ``sync="full"`` a syncer thread then fsyncs the WAL once for every commit made since its last
  fsync, and ``append`` returns after that (survives a power cut). A record that cannot be
  written raises ``LogUnavailable`` (nothing is answered without a record). The loop-side
  connection never checkpoints (``wal_autocheckpoint=0``): the maintenance thread does, so the
  loop never copies the WAL into the database.
- ``lookup(board, component)``: the newest non-``error`` verdict recorded for that pair (an
  ``error`` verdict is logged but is not an answer to repeat: a retry inspects again), an
  indexed point query on the loop's connection (microseconds).
- ``health()``: ``LogHealth``, what a status report, health check or metrics exporter reads. After
  a failed write the state is ``full`` (SQLite's SQLITE_FULL: the disk or a quota) or
  ``unwritable`` (any other write error: permissions, I/O error, a file-size limit); the
  maintenance thread probes every ``retry_s`` and returns to ``ok`` once a write commits again.
- Retention (at start and every ``prune_every_s``, on the maintenance thread's own connection, in
  chunks of ``PRUNE_CHUNK`` records so that the loop's commits wait at most one chunk for the
  write lock): records older than ``max_age_s`` are deleted, then the oldest ones while the
  records' pages exceed ``max_bytes`` (down to 90% of it). Freed pages are reused, so the file
  stops growing at about ``max_bytes`` (plus the WAL, truncated to ``WAL_LIMIT_BYTES`` after each
  checkpoint).

Thread use: ``append``, ``save_usage``, ``lookup``, ``records``, ``load_usage`` and ``flush`` run
on one thread at a time (the event loop's, in the service); ``health``/``writable`` anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.engine.types import Verdict
from orchestrator.errors import CoserveError
from orchestrator.verdicts.hashes import ModelHashes
from orchestrator.verdicts.record import LoggedExpert, LoggedVerdict, from_row, verdict_row

SCHEMA_VERSION = "1"
COLUMNS = (
    "board_id", "component_id", "component_type", "outcome", "defect_class", "scores", "experts",
    "queue_s", "compute_s", "switch_s", "error", "logged_at",
)
_SELECT = f"SELECT seq, {', '.join(COLUMNS)} FROM verdicts"
_INSERT = f"INSERT INTO verdicts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (
    seq INTEGER PRIMARY KEY,
    board_id TEXT NOT NULL,
    component_id TEXT NOT NULL,
    component_type TEXT NOT NULL,
    outcome TEXT NOT NULL,
    defect_class INTEGER,
    scores TEXT NOT NULL,
    experts TEXT NOT NULL,
    queue_s REAL NOT NULL,
    compute_s REAL NOT NULL,
    switch_s REAL NOT NULL,
    error TEXT,
    logged_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_by_key ON verdicts (board_id, component_id);
CREATE INDEX IF NOT EXISTS verdicts_by_time ON verdicts (logged_at);
CREATE TABLE IF NOT EXISTS usage (coe TEXT PRIMARY KEY, snapshot TEXT NOT NULL, saved_at REAL NOT NULL);
"""
#: the WAL is truncated to this after a checkpoint
WAL_LIMIT_BYTES = 16 * 2**20
#: the maintenance thread checkpoints once the WAL holds this many bytes (SQLite's own default
#: of 1000 pages), or every ``prune_every_s``
CHECKPOINT_BYTES = 4 * 2**20
#: records deleted per retention transaction (the loop's commits may wait this long for the lock)
PRUNE_CHUNK = 500
SQLITE_FULL = 13


class LogUnavailable(CoserveError):
    """The verdict log cannot take a record (full, unwritable, closed); says which and why."""


class LogOpenError(CoserveError):
    """The verdict log cannot be opened or created (names the file)."""


@dataclass(frozen=True)
class LogHealth:
    """The log's state for status, health and metrics (``VerdictStore.health``).

    ``state``: ``ok``, ``full`` (the disk or a quota), ``unwritable`` (another write error) or
    ``closed``; ``ok``: ``state == "ok"`` (a field, so that readers of the fields, such as the
    metrics collector, see it); ``reason``: SQLite's words for the last failure. Counters
    (``verdicts_written``, ``commits``, ``write_failures``, ``pruned``) are since the start.
    """

    ok: bool
    path: str
    state: str
    reason: str | None
    records: int
    bytes_on_disk: int
    max_bytes: int | None
    max_age_s: float | None
    verdicts_written: int
    commits: int
    write_failures: int
    pruned: int
    pending: int
    last_commit_unix: float | None
    failing_since_unix: float | None

    def describe(self) -> str:
        """One line for status notes and errors."""
        if self.ok:
            return f"verdict log {self.path}: ok, {self.records} records, {self.bytes_on_disk} B on disk"
        why = f" ({self.reason})" if self.reason else ""
        return f"verdict log {self.path} is {self.state}{why}: new work is refused until it can be written"


@dataclass
class _Write:
    row: tuple[Any, ...]
    future: asyncio.Future[None]


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the awaiting caller was cancelled; the record is written all the same
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _connect(path: Path, **kw: Any) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN/COMMIT), so one commit is one group
    # of records and nothing is committed behind our back
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0, **kw)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


class VerdictStore:
    """The log at ``path`` (module doc). ``start()`` before use, ``close()`` after."""

    def __init__(
        self,
        path: str | Path,
        *,
        sync: str = "normal",
        max_age_s: float | None = None,
        max_bytes: int | None = None,
        prune_every_s: float = 60.0,
        retry_s: float = 5.0,
        hashes: ModelHashes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if sync not in ("full", "normal"):
            raise ValueError(f"sync must be 'full' or 'normal', got {sync!r}")
        self.path = Path(path)
        self.sync = sync
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.prune_every_s = prune_every_s
        self.retry_s = retry_s
        self.hashes = hashes or ModelHashes(None)
        self.clock = clock
        self._conn: sqlite3.Connection | None = None
        self._tick: list[_Write] = []
        self._usage: dict[str, Mapping[str, Any]] = {}
        self._scheduled = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._maintainer: threading.Thread | None = None
        self._syncer: _Syncer | None = None
        self._state = "closed"
        self._reason: str | None = None
        self._failing_since: float | None = None
        self._records = 0
        self._written = 0
        self._commits = 0
        self._failures = 0
        self._pruned = 0
        self._waiting = 0
        #: the record counters change on the loop (commits) and the maintenance thread (pruning)
        self._count_lock = threading.Lock()
        self._last_commit: float | None = None
        #: test seam: called with the writing connection at the start of each write transaction
        #: (records and probes); it may raise, or set pragmas such as ``max_page_count``
        self._before_write: Callable[[sqlite3.Connection], None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Open (creating the file and its directory if needed), prune once, start the
        maintenance (and, with ``sync="full"``, the syncer) thread. ``LogOpenError`` naming the
        file if it cannot be opened or is not a verdict log."""
        maintenance = self._open()
        try:
            self._conn = self._open_writer()
        except LogOpenError:
            maintenance.close()
            raise
        self._state, self._reason = "ok", None
        self._prune(maintenance)
        self._maintainer = threading.Thread(
            target=self._maintain, args=(maintenance,), name=f"verdict-log:{self.path.name}", daemon=True
        )
        self._maintainer.start()
        if self.sync == "full":
            self._syncer = _Syncer(Path(f"{self.path}-wal"), self._fail)

    def close(self) -> None:
        """Commit what is waiting, stop the threads, checkpoint, close. Idempotent."""
        if self._conn is not None and (self._tick or self._usage):
            self._commit_tick()
        if self._syncer is not None:
            self._syncer.close()
            self._syncer = None
        if self._maintainer is not None:
            self._stop.set()
            self._wake.set()
            self._maintainer.join()
            self._maintainer = None
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        self._state = "closed"

    async def aclose(self) -> None:
        self.close()

    def flush(self) -> None:
        """Commit what is waiting now (and, with ``sync="full"``, wait for its fsync); for tests
        and for callers outside an event loop."""
        if self._tick or self._usage:
            self._commit_tick()
        if self._syncer is not None:
            self._syncer.drain()

    def _open(self) -> sqlite3.Connection:
        """The first connection: creates the file, the schema, WAL mode; the maintenance one."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(self.path, check_same_thread=False)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LogOpenError(f"verdict log {self.path}: cannot use WAL mode (got {mode})")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if version is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif version[0] != SCHEMA_VERSION:
                raise LogOpenError(
                    f"verdict log {self.path}: schema version {version[0]}, this coserve writes {SCHEMA_VERSION}"
                )
            self._records = int(conn.execute("SELECT count(*) FROM verdicts").fetchone()[0])
            return conn
        except sqlite3.DatabaseError as exc:
            raise LogOpenError(f"verdict log {self.path}: cannot open: {exc}") from None
        except OSError as exc:
            raise LogOpenError(f"verdict log {self.path}: cannot create: {exc.strerror or exc}") from None

    def _open_writer(self) -> sqlite3.Connection:
        try:
            conn = _connect(self.path, check_same_thread=False)
            # the WAL is fsynced by the syncer thread (sync="full"), not inside COMMIT on the loop
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the maintenance thread checkpoints
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
            return conn
        except sqlite3.Error as exc:
            raise LogOpenError(f"verdict log {self.path}: cannot open: {exc}") from None

    # -- writing ---------------------------------------------------------------------------------
    async def append(self, verdict: Verdict) -> None:
        """Return once ``verdict`` is committed (module doc); ``LogUnavailable`` if it cannot be."""
        if self._conn is None:
            raise LogUnavailable(f"verdict log {self.path} is closed")
        experts = []
        for e in verdict.experts:
            found, digest = self.hashes.known(e.expert, e.version)
            if not found:  # a model file not hashed yet (a new version): read it off the loop
                digest = await asyncio.to_thread(self.hashes.sha256, e.expert, e.version)
            experts.append(LoggedExpert(e.expert, e.version, digest))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._tick.append(_Write(verdict_row(verdict, experts, 0.0), future))
        self._waiting += 1
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._commit_tick)
        await future

    def save_usage(self, coe: str, snapshot: Mapping[str, Any]) -> None:
        """Write the learned usage ``snapshot`` of CoE ``coe`` with the next commit (at once
        outside an event loop); a failure shows in ``health``, never here."""
        if self._conn is None:
            return
        self._usage[coe] = dict(snapshot)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._commit_tick()
            return
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._commit_tick)

    def _commit_tick(self) -> None:
        """Commit every record (and usage snapshot) waiting: one transaction (module doc)."""
        self._scheduled = False
        writes, self._tick = self._tick, []
        usages, self._usage = self._usage, {}
        conn = self._conn
        if conn is None or not (writes or usages):
            return
        now = self.clock()
        error: LogUnavailable | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._before_write is not None:
                    self._before_write(conn)
                # logged_at (the last column) is the commit's time
                conn.executemany(_INSERT, [(*w.row[:-1], now) for w in writes])
                for coe, snapshot in usages.items():
                    conn.execute(
                        "INSERT OR REPLACE INTO usage (coe, snapshot, saved_at) VALUES (?, ?, ?)",
                        (coe, json.dumps(snapshot, sort_keys=True), now),
                    )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            error = self._fail(exc)
        else:
            with self._count_lock:
                self._records += len(writes)
            self._written += len(writes)
            self._commits += 1
            self._last_commit = now
            self._recovered()
        futures = [w.future for w in writes]
        self._waiting -= len(writes)
        if error is None and self._syncer is not None and futures:
            self._syncer.submit(futures)  # answered once the WAL is on disk
            return
        for f in futures:
            _settle(f, error)

    # -- reading ---------------------------------------------------------------------------------
    def load_usage(self, coe: str) -> dict[str, Any] | None:
        """The last usage snapshot saved for ``coe``, or None."""
        row = self._read("SELECT snapshot FROM usage WHERE coe = ?", (coe,))
        if not row:
            return None
        try:
            data = json.loads(row[0][0])
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def lookup(self, board_id: str, component_id: str) -> LoggedVerdict | None:
        """The newest non-``error`` record of (``board_id``, ``component_id``), or None."""
        rows = self._read(
            f"{_SELECT} WHERE board_id = ? AND component_id = ? AND outcome != 'error' ORDER BY seq DESC LIMIT 1",
            (board_id, component_id),
        )
        return from_row(rows[0]) if rows else None

    def records(self, board_id: str, since_unix: float | None = None) -> list[LoggedVerdict]:
        """Every record of ``board_id`` (errors and retries included), oldest first."""
        return [from_row(r) for r in self._read(
            f"{_SELECT} WHERE board_id = ? AND logged_at >= ? ORDER BY seq", (board_id, since_unix or 0.0)
        )]

    def _read(self, sql: str, args: Sequence[Any]) -> list[Any]:
        if self._conn is None:
            raise LogUnavailable(f"verdict log {self.path} is closed")
        try:
            return self._conn.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise LogUnavailable(f"verdict log {self.path}: cannot read: {exc}") from None

    # -- health ----------------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """The state is ``ok`` (cheap: no file system call; ``health`` has the rest)."""
        return self._state == "ok"

    def health(self) -> LogHealth:
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(f"{self.path}{suffix}").st_size
        state = self._state
        pending = self._waiting + (self._syncer.pending() if self._syncer is not None else 0)
        return LogHealth(
            ok=state == "ok", path=str(self.path), state=state, reason=self._reason, records=self._records,
            bytes_on_disk=size, max_bytes=self.max_bytes, max_age_s=self.max_age_s,
            verdicts_written=self._written, commits=self._commits, write_failures=self._failures,
            pruned=self._pruned, pending=pending, last_commit_unix=self._last_commit,
            failing_since_unix=self._failing_since,
        )

    def _fail(self, exc: BaseException, count: bool = True) -> LogUnavailable:
        code = getattr(exc, "sqlite_errorcode", None)
        full = code is not None and code & 0xFF == SQLITE_FULL
        self._state = "full" if full else "unwritable"
        name = getattr(exc, "sqlite_errorname", None)
        self._reason = (str(exc) or type(exc).__name__) + (f" [{name}]" if name else "")
        if self._failing_since is None:
            self._failing_since = self.clock()
        if count:
            self._failures += 1
        self._wake.set()  # the maintenance thread starts probing
        return LogUnavailable(
            f"verdict log {self.path} is {self._state} ({self._reason}): the verdict was not recorded, so it "
            "is not answered; retry once the log can be written"
        )

    def _recovered(self) -> None:
        self._state, self._reason, self._failing_since = "ok", None, None

    # -- the maintenance thread --------------------------------------------------------------------
    def _maintain(self, conn: sqlite3.Connection) -> None:
        """Checkpoints, retention, and while failing, probes (on its own connection)."""
        next_prune = self.clock() + self.prune_every_s
        try:
            while not self._stop.is_set():
                if self._state in ("full", "unwritable"):
                    if not self._stop.wait(self.retry_s):  # not at once: the disk needs a moment
                        self._probe(conn)
                    continue
                self._wake.wait(min(1.0, max(0.001, next_prune - self.clock())))
                self._wake.clear()
                if self._stop.is_set() or self._state != "ok":
                    continue
                if self.clock() >= next_prune:
                    next_prune = self.clock() + self.prune_every_s
                    self._prune(conn)
                    self._checkpoint(conn)
                elif self._wal_bytes() >= CHECKPOINT_BYTES:
                    self._checkpoint(conn)
            self._checkpoint(conn, "TRUNCATE")
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _wal_bytes(self) -> int:
        try:
            return os.stat(f"{self.path}-wal").st_size
        except OSError:
            return 0

    def _checkpoint(self, conn: sqlite3.Connection, mode: str = "PASSIVE") -> None:
        # PASSIVE never waits for the loop's writer; at close (TRUNCATE) nothing else writes
        with contextlib.suppress(sqlite3.Error):
            conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()

    def _probe(self, conn: sqlite3.Connection) -> None:
        """While failing: try a write of about a record's size (new pages, a WAL append); back
        to ``ok`` if it commits."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._before_write is not None:
                    self._before_write(conn)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('probe', hex(randomblob(4096)))")
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('probe', ?)", (repr(self.clock()),))
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc, count=False)
        else:
            self._recovered()

    def _used_bytes(self, conn: sqlite3.Connection) -> int:
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * page

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Retention (module doc), ``PRUNE_CHUNK`` records per transaction."""
        try:
            if self.max_age_s is not None:
                cutoff = self.clock() - self.max_age_s
                older = f"SELECT seq FROM verdicts WHERE logged_at < ? LIMIT {PRUNE_CHUNK}"
                while self._delete(conn, older, (cutoff,)) == PRUNE_CHUNK and not self._stop.is_set():
                    pass
            if self.max_bytes is not None:
                while self._records > 0 and not self._stop.is_set():
                    used = self._used_bytes(conn)
                    if used <= self.max_bytes:
                        break
                    n = max(1, math.ceil(self._records * (1.0 - 0.9 * self.max_bytes / used)))
                    self._delete(conn, "SELECT seq FROM verdicts ORDER BY seq LIMIT ?", (min(n, PRUNE_CHUNK),))
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc, count=False)

    def _delete(self, conn: sqlite3.Connection, select: str, args: tuple[Any, ...]) -> int:
        """Delete the records whose seq ``select`` picks; how many."""
        n = int(conn.execute(f"DELETE FROM verdicts WHERE seq IN ({select})", args).rowcount)
        with self._count_lock:
            self._records -= n
        self._pruned += n
        return n


class _Syncer:
    """``sync="full"``: fsyncs the WAL on its own thread, once per group of commits waiting, then
    settles their futures on their loops (an fsync failure fails them and is reported)."""

    def __init__(self, wal: Path, on_error: Callable[[BaseException], object]) -> None:
        self.wal = wal
        self.on_error = on_error
        self._queue: queue.Queue[list[asyncio.Future[None]] | threading.Event | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="verdict-log-fsync", daemon=True)
        self._thread.start()

    def submit(self, futures: list[asyncio.Future[None]]) -> None:
        self._queue.put(futures)

    def pending(self) -> int:
        return self._queue.qsize()

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until everything submitted so far is synced and settled."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout_s)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(i is None for i in items)
            futures = [f for i in items if isinstance(i, list) for f in i]
            error: BaseException | None = None
            if futures:
                try:
                    fd = os.open(self.wal, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as exc:
                    error = LogUnavailable(f"verdict log WAL {self.wal}: fsync failed: {exc.strerror or exc}")
                    self.on_error(exc)
            for f in futures:
                with contextlib.suppress(RuntimeError):  # the caller's loop has closed
                    f.get_loop().call_soon_threadsafe(_settle, f, error)
            for i in items:
                if isinstance(i, threading.Event):
                    i.set()


def open_read_only(path: str | Path) -> VerdictStore:
    """A store for reading only (``coserve verdicts``): no writer, no retention; ``LogOpenError``
    if there is no log at ``path``."""
    p = Path(path)
    if not p.is_file():
        raise LogOpenError(f"no verdict log at {p}")
    store = VerdictStore(p)
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.Error as exc:
        raise LogOpenError(f"verdict log {p}: cannot read: {exc}") from None
    store._conn = conn
    return store
