"""The operator commands talk to the running daemon through its Unix socket: `dxgate status`
and `dxgate queue` as subprocesses (the real CLI), against a daemon serving the simulated
room and DCMTK storescp. The socket's file permissions are its access control."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from gateway.config import load
from gateway.errors import DxgateError
from gateway.service import local_socket
from gateway.spool import Spool
from hw_sim.room import SimRoom
from tests.peers import StoreSCP
from tests.service.test_daemon import start, wait_for_files, write_config
from tests.spool.objects import make_object, put


def dxgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_status_and_queue_release_act_through_the_running_daemon(tmp_path: Path, room: SimRoom,
                                                                 storescp: StoreSCP) -> None:
    path = write_config(tmp_path, room, storescp)
    cfg = load(path)
    state = Path(cfg.state_dir)
    state.mkdir(mode=0o700, parents=True)
    spool = Spool(cfg.path(cfg.spool.directory), cfg.path(cfg.spool.database), min_free_bytes=0)
    held, given_up = make_object(seed=7), make_object(seed=8)
    for obj in (held, given_up):
        put(spool, obj, destinations=("dcmtk",))
        spool.quarantine(obj.sop_instance_uid, "dcmtk", 0xA700, "refused by the archive", now=1.0)
    spool.close()

    run = start(path, room)
    try:
        sock = cfg.path(cfg.api.socket)
        assert stat.S_ISSOCK(sock.lstat().st_mode) and stat.S_IMODE(sock.lstat().st_mode) == 0o600

        st = dxgate("status", "--config", str(path), "--json")
        assert st.returncode in (0, 1), st.stderr  # 1: an alarm is up (no calibration yet)
        status = json.loads(st.stdout)
        assert status["detector"]["serial"] == room.serial  # the simulator's own identity
        assert {"destination": "dcmtk", "state": "quarantined", "count": 2} in status["queue"]
        human = dxgate("status", "--config", str(path))
        assert "detector     " in human.stdout and room.serial in human.stdout and "quarantined 2" in human.stdout

        no_reason = dxgate("queue", "--config", str(path), "purge", given_up.sop_instance_uid)
        assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
        purged = dxgate("queue", "--config", str(path), "purge", given_up.sop_instance_uid, "--reason",
                        "duplicate of an image the archive holds", "--json")
        assert purged.returncode == 0, purged.stderr
        [row] = json.loads(purged.stdout)
        assert row["state"] == "withheld" and "duplicate of an image" in row["last_error"]
        listed = dxgate("queue", "--config", str(path), "list", "--state", "quarantined", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [r["sop_instance_uid"] for r in json.loads(listed.stdout)] == [held.sop_instance_uid]
        bad = dxgate("queue", "--config", str(path), "list", "--state", "lost")
        assert bad.returncode == 2 and "unknown delivery state 'lost'" in bad.stderr, bad.stderr

        released = dxgate("queue", "--config", str(path), "release", held.sop_instance_uid)
        assert released.returncode == 0, released.stderr
        [stored] = wait_for_files(storescp.files, 1)  # the archive's own view: the daemon sent it at once
        assert pydicom.dcmread(stored).SOPInstanceUID == held.sop_instance_uid  # and not the purged one
        again = dxgate("queue", "--config", str(path), "release", held.sop_instance_uid)
        assert again.returncode == 2 and "no quarantined delivery" in again.stderr
    finally:
        assert run.stop() == 0
    assert not sock.exists()  # removed on the way out
    down = dxgate("status", "--config", str(path))
    assert down.returncode == 3 and "dxgate is not running" in down.stderr and "Traceback" not in down.stderr


@pytest.fixture
def short_dir() -> Iterator[Path]:
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="dxs"))  # sun_path is short: keep pytest's long paths out of it
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


def test_the_socket_is_owner_only_replaces_a_stale_file_and_refuses_a_live_one(short_dir: Path) -> None:
    path = short_dir / "api.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a daemon that died leaves its file behind
    stale.close()
    first = local_socket.listen(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with pytest.raises(DxgateError, match="in use: another dxgate"):
            local_socket.listen(path)
    finally:
        first.sock.close()
        first.remove()
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(DxgateError, match="exists and is not a socket"):
        local_socket.listen(path)
    assert path.read_text() == "not a socket"  # never replaced
    path.unlink()
    with pytest.raises(DxgateError, match="longer than 107 bytes"):
        local_socket.listen(short_dir / ("x" * 120))
    with pytest.raises(DxgateError, match="not a group on this system"):
        local_socket.listen(path, group="no-such-group-dxgate")
    import grp
    group = grp.getgrgid(os.getgid()).gr_name
    shared = local_socket.listen(path, group=group)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660 and path.stat().st_gid == os.getgid()
    finally:
        shared.sock.close()
        shared.remove()
