"""The durable verdict log: one SQLite file in WAL mode, written by one thread, read by anyone.

Why SQLite (stdlib ``sqlite3``) and not append-only JSONL: a retry needs a point lookup by
(board id, component id) and ``coserve verdicts`` a range by board and time (indexes, not a scan
or an in-memory index rebuilt at every start); retention is a ``DELETE`` whose pages are reused
(no rewrite of a whole file); a commit is atomic, so a process killed mid-write leaves the last
committed transaction, never a torn line; the learned usage probabilities live in the same file;
and a CLI can read while the service writes (WAL readers do not block the writer).

Contract of ``VerdictStore``:

- ``await append(verdict)`` returns once the record is committed: with ``sync="full"`` the WAL
  was fsynced (survives a power cut), with ``"normal"`` it was written to the OS (survives a
  killed process, not a power cut). Writes run on the store's own thread; every record queued
  while it commits goes into the next transaction (group commit: one fsync for all of them), so
  the event loop never waits on the disk. A record that cannot be written raises
  ``LogUnavailable`` (nothing is answered without a record).
- ``lookup(board, component)``: the newest non-``error`` verdict recorded for that pair (an
  ``error`` verdict is logged but is not an answer to repeat: a retry inspects again), read on
  the caller's thread (an indexed point query, tens of microseconds).
- ``health()``: ``LogHealth``, what a status report, health check or metrics exporter reads. After
  a failed write the state is ``full`` (SQLite's SQLITE_FULL: the disk or a quota) or
  ``unwritable`` (any other write error: permissions, I/O error, a file-size limit); the writer
  probes every ``retry_s`` and returns to ``ok`` once a write commits again.
- Retention (at start and every ``prune_every_s``, on the writer thread, in chunks so that
  verdicts waiting to be written are not held up): records older than ``max_age_s`` are deleted,
  then the oldest ones while the records' pages exceed ``max_bytes`` (down to 90% of it). Freed
  pages are reused, so the file stops growing at about ``max_bytes`` (plus the WAL, truncated to
  ``WAL_LIMIT_BYTES`` after each checkpoint).
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
#: the WAL is truncated to this after a checkpoint (it grows ~4 MB between checkpoints)
WAL_LIMIT_BYTES = 16 * 2**20
#: records deleted per retention transaction (a bigger one would hold up waiting verdicts)
PRUNE_CHUNK = 2000
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
    verdict: Verdict
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Usage:
    coe: str
    snapshot: Mapping[str, Any]


@dataclass
class _Flush:
    done: threading.Event


_STOP = object()


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the awaiting caller was cancelled; the record is written all the same
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


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
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._state = "closed"
        self._reason: str | None = None
        self._failing_since: float | None = None
        self._records = 0
        self._written = 0
        self._commits = 0
        self._failures = 0
        self._pruned = 0
        # pending = queued - settled: each counter has one writer thread (no lock needed)
        self._queued = 0
        self._settled = 0
        self._last_commit: float | None = None
        self._next_prune = 0.0
        #: test seam: called with the writer's connection at the start of each write transaction
        #: (records and probes); it may raise, or set pragmas such as ``max_page_count``
        self._before_write: Callable[[sqlite3.Connection], None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Open (creating the file and its directory if needed), prune once, start the writer.
        Raises ``LogOpenError`` naming the file if it cannot be opened or is not a verdict log."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name=f"verdict-log:{self.path.name}", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        try:
            self._reader = self._connect(self.path, check_same_thread=False)
        except sqlite3.Error as exc:
            self.close()
            raise LogOpenError(f"verdict log {self.path}: cannot open for reading: {exc}") from None

    def close(self) -> None:
        """Write what is queued, stop the writer, close. Idempotent."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._state = "closed"

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until everything queued so far is written (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(_Flush(done))
        done.wait(timeout_s)

    @staticmethod
    def _connect(path: Path, check_same_thread: bool = True) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN/COMMIT), so one commit is one
        # group of records and nothing is committed behind our back
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread, timeout=5.0)
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    # -- the API -------------------------------------------------------------------------------
    async def append(self, verdict: Verdict) -> None:
        """Return once ``verdict`` is committed (module doc); ``LogUnavailable`` if it cannot be."""
        if self._thread is None:
            raise LogUnavailable(f"verdict log {self.path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queued += 1
        self._queue.put(_Write(verdict, future, loop))
        await future

    def save_usage(self, coe: str, snapshot: Mapping[str, Any]) -> None:
        """Queue the learned usage ``snapshot`` of CoE ``coe`` (written with the next commit; a
        failure shows in ``health``, never here)."""
        if self._thread is not None:
            self._queue.put(_Usage(coe, dict(snapshot)))

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
        if self._reader is None:
            raise LogUnavailable(f"verdict log {self.path} is closed")
        try:
            with self._read_lock:
                return self._reader.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise LogUnavailable(f"verdict log {self.path}: cannot read: {exc}") from None

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
        return LogHealth(
            ok=state == "ok", path=str(self.path), state=state, reason=self._reason, records=self._records,
            bytes_on_disk=size, max_bytes=self.max_bytes, max_age_s=self.max_age_s,
            verdicts_written=self._written, commits=self._commits, write_failures=self._failures,
            pruned=self._pruned, pending=self._queued - self._settled, last_commit_unix=self._last_commit,
            failing_since_unix=self._failing_since,
        )

    # -- the writer thread ---------------------------------------------------------------------
    def _open_writer(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect(self.path)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LogOpenError(f"verdict log {self.path}: cannot use WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
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

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            conn = self._open_writer()
        except LogOpenError as exc:
            failure.append(exc)
            ready.set()
            return
        self._state, self._reason = "ok", None
        self._prune(conn)
        ready.set()
        try:
            self._serve(conn)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _serve(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            wait = self.retry_s if self._state != "ok" else max(0.0, self._next_prune - self.clock())
            try:
                batch = [self._queue.get(timeout=max(wait, 0.001))]
            except queue.Empty:
                batch = []
            while True:  # everything queued meanwhile joins this commit
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            writes = [b for b in batch if isinstance(b, _Write)]
            usages = [b for b in batch if isinstance(b, _Usage)]
            stopping = any(b is _STOP for b in batch)
            if writes or usages:
                self._commit(conn, writes, usages)
            elif self._state != "ok":
                self._probe(conn)
            if self._state == "ok" and self.clock() >= self._next_prune:
                self._prune(conn)
            for b in batch:
                if isinstance(b, _Flush):
                    b.done.set()

    def _experts(self, verdict: Verdict) -> list[LoggedExpert]:
        return [LoggedExpert(e.expert, e.version, self.hashes.sha256(e.expert, e.version)) for e in verdict.experts]

    def _commit(self, conn: sqlite3.Connection, writes: list[_Write], usages: list[_Usage]) -> None:
        now = self.clock()
        error: BaseException | None = None
        try:
            rows = [verdict_row(w.verdict, self._experts(w.verdict), now) for w in writes]
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._before_write is not None:
                    self._before_write(conn)
                conn.executemany(_INSERT, rows)
                for u in usages:
                    conn.execute(
                        "INSERT OR REPLACE INTO usage (coe, snapshot, saved_at) VALUES (?, ?, ?)",
                        (u.coe, json.dumps(u.snapshot, sort_keys=True), now),
                    )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            error = self._fail(exc)
        else:
            self._records += len(rows)
            self._written += len(rows)
            self._commits += 1
            self._last_commit = now
            self._recovered()
        for w in writes:
            self._settled += 1
            with contextlib.suppress(RuntimeError):  # the caller's loop has closed
                w.loop.call_soon_threadsafe(_settle, w.future, error)

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
        return LogUnavailable(
            f"verdict log {self.path} is {self._state} ({self._reason}): the verdict was not recorded, so it "
            "is not answered; retry once the log can be written"
        )

    def _recovered(self) -> None:
        self._state, self._reason, self._failing_since = "ok", None, None

    def _used_bytes(self, conn: sqlite3.Connection) -> int:
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * page

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Retention (module doc), in chunks; stops early (and comes back at once) when verdicts
        are waiting to be written."""
        self._next_prune = self.clock() + self.prune_every_s
        try:
            if self.max_age_s is not None:
                cutoff = self.clock() - self.max_age_s
                older = f"SELECT seq FROM verdicts WHERE logged_at < ? LIMIT {PRUNE_CHUNK}"
                while self._delete(conn, older, (cutoff,)) == PRUNE_CHUNK:
                    if not self._queue.empty():
                        self._next_prune = 0.0
                        return
            if self.max_bytes is not None:
                while self._records > 0:
                    used = self._used_bytes(conn)
                    if used <= self.max_bytes:
                        break
                    n = max(1, math.ceil(self._records * (1.0 - 0.9 * self.max_bytes / used)))
                    self._delete(conn, "SELECT seq FROM verdicts ORDER BY seq LIMIT ?", (min(n, PRUNE_CHUNK),))
                    if not self._queue.empty():
                        self._next_prune = 0.0
                        return
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc, count=False)

    def _delete(self, conn: sqlite3.Connection, select: str, args: tuple[Any, ...]) -> int:
        """Delete the records whose seq ``select`` picks (at most ``PRUNE_CHUNK``); how many."""
        n = int(conn.execute(f"DELETE FROM verdicts WHERE seq IN ({select})", args).rowcount)
        self._records -= n
        self._pruned += n
        return n


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
    store._reader = conn
    return store
