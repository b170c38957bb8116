"""The SHA-256 of the model file an expert's version ran from (for the verdict log).

Source of truth, cheapest first:

1. the exporter's manifest (``<repo>/coserve_manifest.json``, ``experts.<name>.sha256``, taken
   when the file was written), trusted when it describes that version (its ``version``, "1" in
   manifests older than versions), its recorded ``bytes`` equal the file's size now and the
   manifest is not older than the file (the exporter writes the manifest last; a file replaced
   by hand afterwards is newer, and same-architecture weights have the same size);
2. otherwise the file itself (``<repo>/<expert>/<version>/model.onnx``, or ``retired/<version>/``
   once a rollback took it back: ``orchestrator.model_versions``), hashed once and cached by
   (size, mtime), so an expert replaced in place is hashed again.

Both are re-read when the file (or the manifest) changes. ``known`` answers without reading a
model file (a ``stat`` or two: fine on the event loop); ``sha256`` may hash one (a large model
takes a while: call it on a worker thread).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from orchestrator import model_versions

#: the exporter's manifest file (``exporter.repository.MANIFEST``; the orchestrator does not
#: import the exporter)
MANIFEST = "coserve_manifest.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ModelHashes:
    """``sha256(expert, version)`` for the model files under ``repo`` (module doc); thread-safe."""

    def __init__(self, repo: Path | None) -> None:
        self.repo = repo
        self._lock = threading.Lock()
        self._manifest: dict[str, Any] = {}
        self._manifest_stamp: tuple[int, int] | None = None
        self._files: dict[Path, tuple[tuple[int, int], str]] = {}

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns)

    def _manifest_entry(self, expert: str) -> dict[str, Any]:
        assert self.repo is not None
        path = self.repo / MANIFEST
        stamp = self._stamp(path)
        if stamp != self._manifest_stamp:
            self._manifest_stamp = stamp
            try:
                data = json.loads(path.read_text())
                experts = data.get("experts") if isinstance(data, dict) else None
                self._manifest = experts if isinstance(experts, dict) else {}
            except (OSError, ValueError):
                self._manifest = {}
        entry = self._manifest.get(expert)
        return entry if isinstance(entry, dict) else {}

    def known(self, expert: str, version: str) -> tuple[bool, str | None]:
        """``(True, hash)`` when the answer needs no reading of the model file (cached, or the
        manifest is trusted, or there is no file); ``(False, None)`` when ``sha256`` would hash
        the file (call it off the event loop then)."""
        if self.repo is None:
            return True, None
        path = model_versions.model_file(self.repo / expert, version)
        stamp = self._stamp(path)
        if stamp is None:
            return True, None
        with self._lock:
            cached = self._files.get(path)
            if cached is not None and cached[0] == stamp:
                return True, cached[1]
            digest = self._trusted(expert, version, stamp)
            if digest is None:
                return False, None
            self._files[path] = (stamp, digest)
            return True, digest

    def _trusted(self, expert: str, version: str, stamp: tuple[int, int]) -> str | None:
        """The manifest's hash of ``expert`` if it can be trusted for ``version``'s file with ``stamp``."""
        entry = self._manifest_entry(expert)
        digest = entry.get("sha256")
        manifest_newer = self._manifest_stamp is not None and self._manifest_stamp[1] >= stamp[1]
        same_version = str(entry.get("version", "1")) == str(version)
        if isinstance(digest, str) and digest and same_version and entry.get("bytes") == stamp[0] and manifest_newer:
            return digest
        return None

    def sha256(self, expert: str, version: str) -> str | None:
        """The hash of ``expert``'s model file of ``version``; ``None`` if there is no such file
        (an external server's repository this process cannot see, or a non-ONNX model). The file
        is hashed outside the lock, so ``known`` never waits for it."""
        found, digest = self.known(expert, version)
        if found:
            return digest
        assert self.repo is not None
        path = model_versions.model_file(self.repo / expert, version)
        stamp = self._stamp(path)
        try:
            digest = file_sha256(path)
        except OSError:
            return None
        if stamp is not None and self._stamp(path) == stamp:  # unchanged while it was read
            with self._lock:
                self._files[path] = (stamp, digest)
        return digest
