"""Forwarding under kill -9, at scale: a spooled backlog forwarded to DCMTK storescp by a
child process that is SIGKILLed mid-stream and restarted, then audited against the archive's
own files (bench/forward_scale.py and tests/forward/test_forward_scale.py).

The archive (storescp, bit-preserving, a unique file per reception) keeps every copy it
acknowledged, so a resend is visible. Afterwards every spooled instance must be there, each
copy byte-identical (data set) to the spooled file: no instance lost, none stored with two
different contents, none corrupted.
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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from gateway.dicom import new_uid, to_bytes
from gateway.spool import Spool
from tests.dicom_inputs import build_test_dx, make_frame, make_item

ROOT = Path(__file__).resolve().parents[2]
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
STORESCP_ARGS = ("+B", "+uf")  # bit-preserving; every reception its own file (a resend stays visible)
STALL_S = 30.0  # a forwarding child silent this long (no delivery settled) is stuck


@dataclass(frozen=True)
class Image:
    uid: str
    study_uid: str
    data: bytes


def make_images(n: int, *, seed: int, rows: int = 64, columns: int = 64) -> Iterator[Image]:
    """n small DX images from dxgate's builder: one template, fresh UIDs and pixels for each."""
    rng = np.random.default_rng(seed)
    template = build_test_dx(make_item(accession_number="CHAOS1", study_instance_uid=new_uid("2.25")),
                             make_frame(np.zeros((rows, columns), dtype=np.uint16)))
    for _ in range(n):
        ds = template.copy()
        ds.file_meta = template.file_meta.copy()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid("2.25")
        ds.PixelData = rng.integers(0, 1 << 14, size=(rows, columns), dtype=np.uint16).tobytes()
        yield Image(str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), to_bytes(ds))


def populate(spool: Spool, images: list[Image]) -> None:
    for im in images:
        spool.put(im.data, sop_instance_uid=im.uid, sop_class_uid=DX_FOR_PRESENTATION, study_instance_uid=im.study_uid,
                  accession_number="CHAOS1", destinations=["archive"])


def dataset_digest(data: bytes) -> str:
    """sha256 of a Part-10 file's data set: what was sent, whoever wrote the file meta."""
    if len(data) < 144 or data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a Part-10 file with a File Meta Information Group Length")
    group_length = int.from_bytes(data[140:144], "little")
    return hashlib.sha256(data[144 + group_length:]).hexdigest()


@dataclass
class Tally:
    images: int
    kills: int = 0
    kills_mid_stream: int = 0  # kills that landed while the child was still forwarding
    runs: int = 0
    reported_sent: int = 0  # distinct UIDs the children reported sent before they were killed
    archive_files: int = 0
    lost: int = 0  # spooled but at the archive in no copy
    sent_but_missing: int = 0  # reported sent, yet not at the archive
    duplicated_in_content: int = 0  # one UID at the archive with two different contents
    corrupted: int = 0  # a copy whose data set differs from the spooled file, or unreadable
    resent_identical: int = 0  # UIDs the archive holds more than once, identical (an abort's resend)
    unexpected: int = 0  # UIDs at the archive that were never spooled
    not_sent_in_queue: int = 0  # deliveries not 'sent' when the last run finished
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not (self.lost or self.sent_but_missing or self.duplicated_in_content or self.corrupted
                    or self.unexpected or self.not_sent_in_queue)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"clean": self.clean}


def _child(spool_dir: Path, db: Path, port: int, aet: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.forward.forward_child", str(spool_dir), str(db), str(port),
                             aet], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _read_until(proc: subprocess.Popen[bytes], sent: set[str], stop_after: int | None, deadline: float) -> bool:
    """Read the child's lines, collecting sent UIDs, until `stop_after` new ones (then True) or
    until it finishes (False)."""
    assert proc.stdout is not None
    new = 0
    while time.monotonic() < deadline:
        if not select.select([proc.stdout], [], [], min(STALL_S, max(0.0, deadline - time.monotonic())))[0]:
            break  # nothing for STALL_S: the backlog is stuck
        line = proc.stdout.readline().decode()
        if not line:
            return False
        word, _, rest = line.strip().partition(" ")
        if word == "sent":
            sent.add(rest)
            new += 1
            if stop_after is not None and new >= stop_after:
                return True
        elif word == "done":
            return False
    raise TimeoutError(f"the forwarding child settled no delivery for {STALL_S:.0f} s or ran out of time")


def run_chaos(work: Path, images: list[Image], *, kills: int, port: int, archive_dir: Path, seed: int = 0,
              aet: str = "STORESCP", timeout_s: float = 600.0) -> Tally:
    """Spool `images`, forward them with `kills` SIGKILLs at random points of the stream and a
    restart after each, then audit the archive directory against the spool."""
    rng = random.Random(seed)
    spool_dir, db = work / "spool", work / "state.db"
    with Spool(spool_dir, db, min_free_bytes=0) as spool:
        populate(spool, images)
    tally = Tally(images=len(images))
    sent: set[str] = set()
    started = time.monotonic()
    deadline = started + timeout_s
    for k in range(kills + 1):
        proc = _child(spool_dir, db, port, aet)
        tally.runs += 1
        try:
            if k < kills:
                stride = max(1, len(images) // (kills + 1))
                mid_stream = _read_until(proc, sent, rng.randint(1, stride), deadline)
                time.sleep(rng.uniform(0.0, 0.01))  # the random instant of the crash is the point
                os.kill(proc.pid, signal.SIGKILL)
                tally.kills += 1
                tally.kills_mid_stream += int(mid_stream)
            else:
                _read_until(proc, sent, None, deadline)
        finally:
            if proc.poll() is None and k < kills:
                os.kill(proc.pid, signal.SIGKILL)  # an error above: never leave a child behind
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        sent |= {ln.split()[1] for ln in out.decode().splitlines() if ln.startswith("sent ")}
        if k == kills and proc.returncode != 0:
            raise RuntimeError(f"the last forwarding run failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    tally.seconds = round(time.monotonic() - started, 2)
    tally.reported_sent = len(sent)
    audit(tally, images, sent, archive_dir, spool_dir, db)
    return tally


def audit(tally: Tally, images: list[Image], sent: set[str], archive_dir: Path, spool_dir: Path, db: Path) -> None:
    """Compare the archive's own files with what was spooled and acknowledged."""
    expected = {im.uid: dataset_digest(im.data) for im in images}
    copies: dict[str, list[str]] = {}
    files = [p for p in archive_dir.iterdir() if p.is_file()]
    tally.archive_files = len(files)
    for path in files:
        data = path.read_bytes()
        try:
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            digest = dataset_digest(data)
        except (InvalidDicomError, ValueError, AttributeError, EOFError, OSError):
            tally.corrupted += 1
            continue
        copies.setdefault(uid, []).append(digest)
    tally.unexpected = len(copies.keys() - expected.keys())
    tally.lost = len(expected.keys() - copies.keys())
    tally.sent_but_missing = len(sent - copies.keys())
    for uid, digests in copies.items():
        if uid not in expected:
            continue
        if len(set(digests)) > 1:
            tally.duplicated_in_content += 1
        elif len(digests) > 1:
            tally.resent_identical += 1
        tally.corrupted += sum(d != expected[uid] for d in digests)
    with Spool(spool_dir, db, min_free_bytes=0) as spool:
        counts = spool.counts()
        for im in images[:50]:  # the spool kept its originals intact
            inst = spool.instance(im.uid)
            if inst is None or Path(inst.path).read_bytes() != im.data:
                tally.corrupted += 1
    tally.not_sent_in_queue = sum(n for state, n in counts.items() if state != "sent")
