"""The order of the durability point, as the system calls show it.

A crash can only leave "no trace or a complete instance" if Spool.put (and the raw store's
keep) make the file's bytes durable before it gets its final name, make that name durable
before the queue row that points at it is committed: fsync(file) -> rename -> fsync(dir) ->
COMMIT. Recorded from os.fsync / os.replace / os.rename and SQLite's own statement trace;
deleting any fsync or swapping two steps turns this red (no other test can see a missing
fsync: without a power cut the page cache hides it).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.acquisition.raw_store import RawStore
from gateway.spool import Spool
from tests.acquisition.raw_child import frame
from tests.acquisition.test_raw_store import EXPOSURE
from tests.spool.objects import make_object, put


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def fsync_kind(self, fd: int) -> str:
        mode = os.fstat(fd).st_mode
        target = os.readlink(f"/proc/self/fd/{fd}")
        return ("fsync-dir" if stat.S_ISDIR(mode) else "fsync-file"), target


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    rec = Recorder()
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd: int) -> None:
        kind, target = rec.fsync_kind(fd)
        real_fsync(fd)
        rec.events.append((kind, target))

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_replace(src, dst)
        rec.events.append(("rename", str(dst)))

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_rename(src, dst)
        rec.events.append(("rename", str(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    yield rec


def _steps(events: list[tuple[str, str]], final: Path) -> list[str]:
    """The durability steps concerning `final`, in order: its file, its name, its directory."""
    out = []
    for kind, target in events:
        if kind == "fsync-file" and Path(target).parent == final.parent and final.name in Path(target).name:
            out.append("fsync(file)")
        elif kind == "rename" and Path(target) == final:
            out.append("rename")
        elif kind == "fsync-dir" and Path(target) == final.parent:
            out.append("fsync(dir)")
        elif kind == "commit":
            out.append("COMMIT")
    return out


def test_spool_put_fsyncs_file_then_renames_then_fsyncs_dir_then_commits(tmp_path: Path, recorder: Recorder) -> None:
    spool = Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=lambda: 1000.0)
    try:
        conn = spool._queue._db.conn
        conn.set_trace_callback(lambda sql: recorder.events.append(("commit", sql))
                                if sql.strip().upper().startswith("COMMIT") else None)
        recorder.events.clear()
        obj = make_object(seed=3)
        saved = put(spool, obj)
        steps = _steps(recorder.events, Path(saved.path))
        # the first COMMIT after the file's steps is the one that makes the instance "saved"
        assert steps[:4] == ["fsync(file)", "rename", "fsync(dir)", "COMMIT"], steps
    finally:
        spool.close()


def test_raw_keep_fsyncs_file_then_renames_then_fsyncs_dir(tmp_path: Path, recorder: Recorder) -> None:
    store = RawStore(tmp_path / "raw")
    (tmp_path / "raw").mkdir()
    recorder.events.clear()
    kept_id = store.keep(frame(5, 64), EXPOSURE, {}, now=datetime.now(UTC))
    final = tmp_path / "raw" / f"{kept_id}.dxraw"
    assert _steps(recorder.events, final) == ["fsync(file)", "rename", "fsync(dir)"]
