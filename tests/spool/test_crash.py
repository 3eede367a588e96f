"""kill -9 at a random instant leaves either no trace or a complete, forwardable instance."""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.spool import Spool, files

ROOT = Path(__file__).resolve().parents[2]


def _run_and_kill(root: Path, db: Path, seed: int, kill_after_s: float) -> list[str]:
    """Start the spooling child, SIGKILL it after `kill_after_s`, return the UIDs it acknowledged."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.spool.spool_child", str(root), str(db), str(seed)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        ready = select.select([proc.stdout], [], [], 60)[0]
        assert ready and proc.stdout.readline().strip() == b"ready", proc.stderr.read() if proc.stderr else ""
        time.sleep(kill_after_s)  # the random instant of the crash is the point of this test
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return [line for line in out.decode().split() if line]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_leaves_only_complete_committed_instances(tmp_path: Path, seed: int) -> None:
    root, db = tmp_path / "spool", tmp_path / "state.db"
    rng = random.Random(seed)
    acknowledged: list[str] = []
    for _round in range(2):  # crash, reopen, keep spooling, crash again
        acknowledged += _run_and_kill(root, db, rng.randrange(1 << 30), rng.uniform(0.3, 1.5))

    spool = Spool(root, db, min_free_bytes=0)
    try:
        committed = {uid: spool.instance(uid) for uid in _all_uids(db)}
        assert acknowledged, "the child never acknowledged an instance; the test proved nothing"
        missing = [uid for uid in acknowledged if committed.get(uid) is None]
        assert not missing, f"acknowledged but lost: {missing}"
        for uid, inst in committed.items():
            data = Path(inst.path).read_bytes()
            assert len(data) == inst.size and hashlib.sha256(data).hexdigest() == inst.sha256, uid
        assert not list(root.rglob(f"*{files.TEMP_SUFFIX}")), "half-written files must be removed"
        unreferenced = {Path(p).name.removesuffix(files.FILE_SUFFIX) for p in spool.recovery.unreferenced_files}
        assert not unreferenced & set(committed)
        due = {d.sop_instance_uid for d in spool.due("pacs", 1e12, 100_000)}
        assert due == set(committed), "only committed instances are forwarded"
        assert spool.recovery.missing_files == ()
    finally:
        spool.close()


def _all_uids(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("select sop_instance_uid from instances")]
    finally:
        conn.close()
