"""The verdict log's store on a real SQLite file: records round-trip with model hashes, lookups,
group commit, persistence, retention by age and size, write failures (injected and a real
file-size limit in a subprocess), open errors, usage snapshots."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine.types import ExpertUse, Verdict
from orchestrator.verdicts.hashes import ModelHashes
from orchestrator.verdicts.store import LogOpenError, LogUnavailable, VerdictStore, open_read_only

ROOT = Path(__file__).resolve().parents[3]


def verdict(component: str, outcome: str = "pass", board: str = "b1", **kw: Any) -> Verdict:
    return Verdict(board, component, "t1", outcome, scores=(0.75, 0.25),  # type: ignore[arg-type]
                   experts=(ExpertUse("cls_a", "1"),), queue_s=0.001, compute_s=0.002, switch_s=0.5, **kw)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VerdictStore]:
    s = VerdictStore(tmp_path / "log" / "verdicts.sqlite", retry_s=0.02)
    s.start()
    yield s
    s.close()


def append_all(store: VerdictStore, verdicts: list[Verdict]) -> list[BaseException | None]:
    async def run() -> list[BaseException | None]:
        results = await asyncio.gather(*(store.append(v) for v in verdicts), return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    return asyncio.run(run())


def test_a_record_round_trips_with_the_model_files_hash(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "cls_a" / "1").mkdir(parents=True)
    model = repo / "cls_a" / "1" / "model.onnx"
    model.write_bytes(b"weights")
    store = VerdictStore(tmp_path / "v.sqlite", hashes=ModelHashes(repo))
    store.start()
    try:
        v = verdict("c1", "defect", defect_class=2)
        append_all(store, [v])
        got = store.lookup("b1", "c1")
        assert got is not None and got.verdict == v
        assert [(e.expert, e.version, e.sha256) for e in got.experts] == [
            ("cls_a", "1", hashlib.sha256(b"weights").hexdigest())]
        assert abs(got.logged_at - time.time()) < 60
        assert store.lookup("b1", "other") is None and store.lookup("b2", "c1") is None
    finally:
        store.close()


def test_the_manifest_hash_is_used_unless_the_file_changed_after_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "cls_a" / "1").mkdir(parents=True)
    model = repo / "cls_a" / "1" / "model.onnx"
    model.write_bytes(b"v1-weights")
    (repo / "coserve_manifest.json").write_text(json.dumps({"experts": {"cls_a": {"sha256": "m" * 64, "bytes": 10}}}))
    hashes = ModelHashes(repo)
    assert hashes.sha256("cls_a", "1") == "m" * 64  # trusted: same size, manifest not older
    os.utime(model, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # replaced by hand afterwards
    assert hashes.sha256("cls_a", "1") == hashlib.sha256(b"v1-weights").hexdigest()
    assert hashes.sha256("cls_a", "2") is None and ModelHashes(None).sha256("cls_a", "1") is None


def test_lookup_skips_error_verdicts_and_returns_the_newest(store: VerdictStore) -> None:
    append_all(store, [verdict("c1", "error", error="expert cls_a failed to load")])
    assert store.lookup("b1", "c1") is None  # an error is logged but not repeated
    append_all(store, [verdict("c1", "pass")])
    append_all(store, [verdict("c1", "defect", defect_class=1)])
    got = store.lookup("b1", "c1")
    assert got is not None and got.verdict.outcome == "defect"
    assert [r.verdict.outcome for r in store.records("b1")] == ["error", "pass", "defect"]


def test_records_queued_together_share_one_commit(store: VerdictStore) -> None:
    errors = append_all(store, [verdict(f"c{i}") for i in range(200)])
    assert errors == [None] * 200
    health = store.health()
    assert health.verdicts_written == 200 and health.records == 200
    assert health.commits < 50, health  # group commit: one transaction per batch the writer found
    assert health.pending == 0


def test_records_survive_a_reopen_and_a_reader_sees_them(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    first = VerdictStore(path)
    first.start()
    append_all(first, [verdict("c1"), verdict("c2", board="b2")])
    first.close()
    second = VerdictStore(path)
    second.start()
    try:
        assert second.health().records == 2
        assert second.lookup("b2", "c2") is not None
    finally:
        second.close()
    reader = open_read_only(path)
    assert [r.verdict.component_id for r in reader.records("b1")] == ["c1"]
    assert reader.records("b1", since_unix=time.time() + 60) == []


def test_retention_prunes_records_older_than_max_age(tmp_path: Path) -> None:
    now = [1_000_000.0]
    path = tmp_path / "v.sqlite"
    old = VerdictStore(path, clock=lambda: now[0])
    old.start()
    append_all(old, [verdict("old1"), verdict("old2")])
    old.close()
    now[0] += 3600.0
    store = VerdictStore(path, clock=lambda: now[0], max_age_s=1800.0)
    store.start()  # retention runs at start
    try:
        append_all(store, [verdict("new")])
        assert [r.verdict.component_id for r in store.records("b1")] == ["new"]
        assert store.health().pruned == 2 and store.health().records == 1
    finally:
        store.close()


def test_retention_keeps_the_records_under_max_bytes_dropping_the_oldest(tmp_path: Path) -> None:
    max_bytes = 200_000
    store = VerdictStore(tmp_path / "v.sqlite", max_bytes=max_bytes, prune_every_s=0.001)
    store.start()
    try:
        for chunk in range(6):
            append_all(store, [verdict(f"c{chunk}-{i}", error="x" * 400) for i in range(200)])

        def used() -> int:
            conn = sqlite3.connect(store.path)
            (pages,), (free,), (size,) = (conn.execute(f"PRAGMA {p}").fetchone() for p in
                                          ("page_count", "freelist_count", "page_size"))
            conn.close()
            return int((pages - free) * size)

        deadline = time.monotonic() + 10  # the maintenance thread prunes after the last commit
        while used() > max_bytes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert used() <= max_bytes
        kept = [r.verdict.component_id for r in store.records("b1")]
        assert kept and kept[-1] == "c5-199" and "c0-0" not in kept
        assert store.health().pruned == 1200 - len(kept)
    finally:
        store.close()


def _fail_full(conn: sqlite3.Connection) -> None:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = 13  # type: ignore[attr-defined]
    raise exc


def test_a_failed_write_is_reported_and_raised_then_recovers(store: VerdictStore) -> None:
    append_all(store, [verdict("before")])
    store._before_write = _fail_full
    [error] = append_all(store, [verdict("during")])
    assert isinstance(error, LogUnavailable) and "is full" in str(error) and str(store.path) in str(error)
    health = store.health()
    assert (health.ok, health.state, health.write_failures) == (False, "full", 1)
    assert "full" in health.describe() and "refused" in health.describe()
    assert not store.writable
    store._before_write = None  # space again: the writer's probe brings it back
    deadline = time.monotonic() + 5
    while not store.writable and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.health().state == "ok"
    assert append_all(store, [verdict("after")]) == [None]
    assert [r.verdict.component_id for r in store.records("b1")] == ["before", "after"]


def test_a_real_sqlite_full_is_classified_as_full(store: VerdictStore) -> None:
    append_all(store, [verdict("c0")])

    def cap(conn: sqlite3.Connection) -> None:  # SQLite itself refuses to grow the file
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    store._before_write = cap
    errors: list[BaseException | None] = []
    for i in range(200):
        errors += append_all(store, [verdict(f"c{i + 1}", error="y" * 2000)])
        if errors[-1] is not None:
            break
    assert isinstance(errors[-1], LogUnavailable)
    assert store.health().state == "full" and "SQLITE_FULL" in (store.health().reason or "")


def test_a_file_size_limit_makes_the_log_unwritable_and_keeps_what_was_committed(tmp_path: Path) -> None:
    """A real write failure without root: RLIMIT_FSIZE in a child process (SIGXFSZ ignored, so the
    write fails with EFBIG), appending until the log refuses."""
    path = tmp_path / "v.sqlite"
    script = textwrap.dedent(f"""
        import asyncio, json, resource, signal
        from orchestrator.engine.types import Verdict
        from orchestrator.verdicts.store import LogUnavailable, VerdictStore
        store = VerdictStore({str(path)!r})
        store.start()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        async def main():
            ok = []
            for i in range(10000):
                try:
                    await store.append(Verdict("b", f"c{{i}}", "t", "pass", scores=(0.5,) * 8))
                except LogUnavailable as exc:
                    return ok, str(exc)
                ok.append(f"c{{i}}")
            return ok, None
        ok, error = asyncio.run(main())
        health = store.health()
        print(json.dumps({{"ok": ok, "error": error, "state": health.state, "serving": store.writable}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["error"] is not None and "unwritable" in result["error"] and str(path) in result["error"]
    assert result["state"] == "unwritable" and result["serving"] is False
    assert len(result["ok"]) >= 3
    # every record whose append returned is in the file
    reader = open_read_only(path)
    assert [r.verdict.component_id for r in reader.records("b")] == result["ok"]


def test_open_errors_name_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(LogOpenError, match=r"a_file/v.sqlite: cannot create"):
        VerdictStore(blocker / "v.sqlite").start()
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LogOpenError, match=r"junk.sqlite: cannot open"):
        VerdictStore(junk).start()
    with pytest.raises(LogOpenError, match="no verdict log at"):
        open_read_only(tmp_path / "missing.sqlite")


def test_usage_snapshots_are_saved_and_loaded_per_coe(store: VerdictStore) -> None:
    assert store.load_usage("demo") is None
    store.save_usage("demo", {"requests": 12.5, "uses": {"cls_a": 3.0}})
    store.save_usage("other", {"requests": 1.0, "uses": {}})
    store.flush()
    assert store.load_usage("demo") == {"requests": 12.5, "uses": {"cls_a": 3.0}}
    store.save_usage("demo", {"requests": 20.0, "uses": {}})
    store.flush()
    assert store.load_usage("demo") == {"requests": 20.0, "uses": {}}


def test_sync_full_fsyncs_the_wal_once_per_group_before_answering(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestrator.verdicts.store as store_mod

    synced: list[int] = []
    real_fsync = os.fsync
    def counting(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(store_mod.os, "fsync", counting)
    store = VerdictStore(tmp_path / "v.sqlite", sync="full")
    store.start()
    try:
        assert append_all(store, [verdict(f"c{i}") for i in range(50)]) == [None] * 50
        assert 1 <= len(synced) <= 5  # one fsync for the group, not one per record
        assert store.health().pending == 0 and store.lookup("b1", "c49") is not None

        def broken(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(store_mod.os, "fsync", broken)
        [error] = append_all(store, [verdict("lost")])
        assert isinstance(error, LogUnavailable) and "fsync failed" in str(error)
        assert store.health().state == "unwritable"
    finally:
        store.close()
