"""kill -9 of a whole gateway while it acquires and forwards: nothing acknowledged is lost.

A real gateway process (real drivers, simulator behind them, spool, forwarder thread sending
to DCMTK storescp) is SIGKILLed at a random instant, restarted on the same state directory,
killed again; a last gateway drains the backlog. Every instance ever reported "saved" must
then be in the archive, byte-identical to its spooled file; no half file is ever used.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest

from gateway.app import Gateway
from gateway.config import CalibrationConfig, Config, DestinationConfig, DetectorConfig, GeneratorConfig, ReviewConfig
from hw_sim.room import SimRoom
from tests.peers import StoreSCP

ROOT = Path(__file__).resolve().parent.parent


PANEL_SEED = 9


def run_and_kill(state_dir: Path, pacs_port: int, seed: int, rng: random.Random) -> list[str]:
    """Run the gateway child until it has saved a few images, SIGKILL it mid-flight, return its acks."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.gateway_child", str(state_dir), str(pacs_port), str(seed)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    acked: list[str] = []
    wanted = rng.randint(1, 4)
    try:
        deadline = time.monotonic() + 60
        while len(acked) < wanted and time.monotonic() < deadline:
            if not select.select([proc.stdout], [], [], 60)[0]:
                break
            line = proc.stdout.readline().decode().split()
            if not line:
                break
            if line[0] == "saved":
                acked.append(line[1])
        time.sleep(rng.uniform(0.0, 0.25))  # the random instant of the crash is the point of this test
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    acked += [line.split()[1] for line in out.decode().splitlines() if line.startswith("saved ")]
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert len(acked) >= wanted, err.decode()[-2000:]
    return acked


@pytest.mark.timeout(300)
def test_kill_9_mid_acquisition_and_forwarding_loses_nothing(tmp_path: Path, storescp: StoreSCP) -> None:
    rng = random.Random(20261122)
    state_dir = tmp_path / "state"
    acked: list[str] = []
    for _round in range(3):  # the same panel (seed) every time: a restarted room, calibrated once
        acked += run_and_kill(state_dir, storescp.port, seed=PANEL_SEED, rng=rng)

    room = SimRoom(seed=PANEL_SEED)
    config = Config(state_dir=str(state_dir), detector=DetectorConfig(mode="8x8"),
                    generator=GeneratorConfig(port=room.start_generator()),
                    calibration=CalibrationConfig(dark_frames=4, flat_frames=4),
                    review=ReviewConfig(hold_s=0),  # as in the child: the reprocessed image goes at once
                    destinations=(DestinationConfig(name="pacs", port=storescp.port, called_ae=storescp.aet),))
    later = datetime.now(UTC) + timedelta(hours=1)  # every backoff from the crashes has run out
    try:
        with Gateway(config, usb_backend=room.usb_backend(), clock=lambda: later) as gw:
            assert gw.spool.recovery.missing_files == ()
            # a kill between the dose and the spool leaves the raw frame kept: its image is made now
            assert all(r.outcome in ("saved", "already-saved") for r in gw.reprocess())
            assert gw.raw_store.pending() == []
            gw.forward_due()
            counts = gw.spool.counts()
            assert counts["pending"] == 0 and counts["quarantined"] == 0, counts
            spooled = {uid: gw.spool.instance(uid) for uid in acked}
    finally:
        room.close()

    assert len(set(acked)) == len(acked) >= 3  # identity assigned once: no UID was reused
    archived: dict[str, set[str]] = {}
    for path in storescp.files():
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        archived.setdefault(uid, set()).add(hashlib.sha256(path.read_bytes()).hexdigest())
    for uid in acked:
        inst = spooled[uid]
        assert inst is not None, f"{uid} was acknowledged as saved but is not in the spool"
        assert hashlib.sha256(Path(inst.path).read_bytes()).hexdigest() == inst.sha256
        assert uid in archived, f"{uid} was acknowledged as saved but never reached the archive"
    # a resend after a crash reuses the UID and the very same bytes: never a duplicate in content
    assert all(len(digests) == 1 for digests in archived.values())
