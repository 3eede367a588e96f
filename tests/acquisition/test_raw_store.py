"""The raw store: what is kept after a dose survives a crash at any instant, and is verified."""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import xxhash

from gateway.acquisition import raw_store
from gateway.acquisition.raw_store import SUFFIX, RawStore, RawStoreError
from gateway.types import Exposure, ExposureReadback, Technique
from tests.acquisition.raw_child import frame

ROOT = Path(__file__).resolve().parents[2]
EXPOSURE = Exposure(requested=Technique(80, 2), actual=ExposureReadback(80.1, None, 10.0, 0.01),
                    started_at=datetime(2026, 11, 22, 10, 0, tzinfo=UTC), problems=("generator readback mas missing",))


def test_a_kept_frame_reads_back_exactly(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    f = frame(7, 64)
    kept_id = store.keep(f, EXPOSURE, {"sop_instance_uid": "2.25.1"}, now=datetime.now(UTC))
    back = store.load(kept_id)
    assert np.array_equal(back.frame.pixels, f.pixels) and back.frame.meta == f.meta
    assert back.exposure == EXPOSURE and back.context == {"sop_instance_uid": "2.25.1"}
    assert [k.kept_id for k in store.pending()] == [kept_id]
    assert oct(os.stat(back.path).st_mode & 0o777) == "0o600"  # holds patient data


def test_a_corrupt_or_truncated_record_is_refused_naming_the_file(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    kept_id = store.keep(frame(1, 64), EXPOSURE, {}, now=datetime.now(UTC))
    path = tmp_path / "raw" / f"{kept_id}{SUFFIX}"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RawStoreError, match=f"{kept_id}.*pixel checksum mismatch"):
        store.load(kept_id)
    path.write_bytes(bytes(data[:40]))
    with pytest.raises(RawStoreError, match="does not fit the file"):
        store.load(kept_id)
    [summary] = store.pending()  # still listed, with the reason, for the engineer
    assert summary.reason.startswith("unreadable")


def test_a_record_kept_by_an_earlier_version_with_a_sha256_still_reads_and_is_still_checked(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    f = frame(3, 64)
    kept_id = store.keep(f, EXPOSURE, {}, now=datetime.now(UTC))
    path = tmp_path / "raw" / f"{kept_id}{SUFFIX}"
    header, pixels = raw_store._split(path.read_bytes(), path)
    assert header.pop("pixels_xxh3_128") == xxhash.xxh3_128_hexdigest(pixels)  # what this version writes
    header["pixels_sha256"] = hashlib.sha256(pixels).hexdigest()  # what the earlier one wrote
    path.write_bytes(b"".join(raw_store._record_chunks(header, pixels)))
    assert np.array_equal(store.load(kept_id).frame.pixels, f.pixels)
    bad = bytearray(pixels)
    bad[5] ^= 0x01
    path.write_bytes(b"".join(raw_store._record_chunks(header, bytes(bad))))
    with pytest.raises(RawStoreError, match="pixel checksum mismatch"):
        store.load(kept_id)


def test_imaged_frames_leave_or_move_aside(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "raw")
    a = store.keep(frame(1, 32), EXPOSURE, {}, now=datetime.now(UTC))
    b = store.keep(frame(2, 32), EXPOSURE, {}, now=datetime.now(UTC))
    store.imaged(a, keep=False)
    store.imaged(b, keep=True)
    assert store.pending() == []
    assert [p.name for p in (tmp_path / "raw" / "imaged").iterdir()] == [f"{b}{SUFFIX}"]
    assert not (tmp_path / "raw" / f"{a}{SUFFIX}").exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_while_keeping_leaves_only_complete_records(tmp_path: Path, seed: int) -> None:
    raw = tmp_path / "raw"
    rng = random.Random(seed)
    acknowledged: list[str] = []
    for _round in range(2):
        cmd = [sys.executable, "-m", "tests.acquisition.raw_child", str(raw), str(rng.randrange(1 << 30))]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            assert select.select([proc.stdout], [], [], 60)[0] and proc.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0.2, 1.0))  # the random instant of the crash is the point of this test
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=30)
        acknowledged += out.decode().split()
    assert acknowledged, "the child never kept a frame; the test proved nothing"
    store = RawStore(raw)  # reopening removes half-written temp files
    assert not [p for p in raw.iterdir() if p.name.startswith(".")], "half-written files must be removed"
    on_disk = {k.kept_id for k in store.pending()}
    assert set(acknowledged) <= on_disk, "a frame acknowledged as kept was lost"
    for kept_id in on_disk:  # and every record on disk is complete and verified
        kept = store.load(kept_id)
        assert kept.frame.pixels.flat[0] == kept.frame.meta.frame_number % 60000
