"""Forwarding speed of large DX images: dxgate against DCMTK storescu, all into DCMTK storescp.

One run starts /usr/bin/storescp on loopback (TCP_NODELAY=1, --max-pdu 131072, +B bit
preserving), writes 20 DX images of 3072x3072 (dxgate's own DX builder, ~18.9 MB each) and
times, alternating, each of:
  dxgate            the real forwarding path: spooled with Spool.put, sent by
                    Forwarder.forward_due() (`--associations`, default 1: storescp without
                    --fork serves one association at a time)
  storescu_tuned    /usr/bin/storescu, TCP_NODELAY=1, --max-pdu 131072
  storescu_default  /usr/bin/storescu with its defaults
Every run is checked at storescp: the count of files and their bytes; for dxgate, each received
dataset is byte-identical to the spool's. Each timed run starts with the file systems synced
(os.sync), so the write-back of what an earlier run wrote does not land in a later one's time.
Prints JSON: `mb_per_s` (dxgate, median of the repeats), `ratio_to_storescu_tuned`,
`ratio_to_storescu_default` (medians; the machine may be shared and noisy, so the ratio of the
best runs is given too), and every sender's figures, with
`cpu_s_median`: CPU seconds it used per run (dxgate: this process during the pass, the digest
check of every spool file before its last fragment included; storescu: the child process).

    .venv/bin/python bench/forward.py [--count 20] [--repeat 5] [--associations 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pynetdicom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.dicom_inputs
from gateway.config import DestinationConfig  # noqa: E402
from gateway.dicom import to_bytes  # noqa: E402
from gateway.forward import Forwarder, Outcome  # noqa: E402
from gateway.forward.pdata import dataset_offset  # noqa: E402
from gateway.netopts import configure_pynetdicom  # noqa: E402
from gateway.spool import Spool  # noqa: E402
from tests.dicom_inputs import build_test_dx, make_frame  # noqa: E402
from tests.peers import free_port, wait_for_port  # noqa: E402

STORESCP = "/usr/bin/storescp"
STORESCU = "/usr/bin/storescu"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
MAX_PDU = 131072


def make_dx(rows: int, columns: int, rng: np.random.Generator) -> tuple[str, str, bytes]:
    """A DX image from dxgate's own builder: (SOP Instance UID, Study UID, Part-10 bytes)."""
    ds = build_test_dx(frame=make_frame(rng.integers(0, 16384, size=(rows, columns), dtype=np.uint16)))
    return str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), to_bytes(ds)


def dataset_sha256(path: Path) -> str:
    """sha256 of a Part-10 file's dataset (the bytes after its file meta)."""
    with open(path, "rb") as fh:
        fh.seek(dataset_offset(fh))
        return hashlib.file_digest(fh, "sha256").hexdigest()


CPU_S: dict[str, list[float]] = {}  # CPU seconds (user + system) each sender used per run


def cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def time_dxgate(work: Path, instances: list[tuple[str, str, bytes]], port: int, associations: int) -> float:
    spool_dir = work / f"spool-{time.monotonic_ns()}"
    spool = Spool(spool_dir / "files", spool_dir / "state.db", min_free_bytes=0)
    try:
        for uid, study, data in instances:
            spool.put(data, sop_instance_uid=uid, sop_class_uid=DX_FOR_PRESENTATION, study_instance_uid=study,
                      accession_number="", destinations=["scp"])
        fwd = Forwarder(spool, [DestinationConfig(name="scp", host="127.0.0.1", port=port, called_ae="STORESCP",
                                                  max_pdu=MAX_PDU, timeout_s=120.0, associations=associations)],
                        calling_ae="DXGATE")
        os.sync()
        t0, c0 = time.perf_counter(), cpu_s(resource.RUSAGE_SELF)
        results = fwd.forward_due()
        elapsed = time.perf_counter() - t0
        CPU_S.setdefault("dxgate", []).append(cpu_s(resource.RUSAGE_SELF) - c0)
    finally:
        spool.close()
        shutil.rmtree(spool_dir)
    bad = [r for r in results if r.outcome is not Outcome.SENT]
    if len(results) != len(instances) or bad:
        raise RuntimeError(f"dxgate did not send everything: {bad[:3]}")
    return elapsed


def time_storescu(paths: list[Path], port: int, tuned: bool) -> float:
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    cmd = [STORESCU, "-aet", "DXGATE", "-aec", "STORESCP", "--required"]
    if tuned:
        env["TCP_NODELAY"] = "1"
        cmd += ["--max-pdu", str(MAX_PDU)]
    cmd += ["127.0.0.1", str(port), *map(str, paths)]
    os.sync()
    t0, c0 = time.perf_counter(), cpu_s(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    CPU_S.setdefault("storescu_tuned" if tuned else "storescu_default", []).append(
        cpu_s(resource.RUSAGE_CHILDREN) - c0)
    if out.returncode != 0:
        raise RuntimeError(f"storescu failed ({out.returncode}): {out.stderr[-2000:]}")
    return elapsed


def check_received(received: Path, who: str, expected: dict[str, str]) -> int:
    """The files storescp wrote: as many as sent, each dataset identical to the original;
    returns their total size."""
    files = sorted(received.glob("*.dcm"))
    if len(files) != len(expected):
        raise RuntimeError(f"{who}: storescp holds {len(files)} files, expected {len(expected)}")
    for f in files:
        uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        if expected.get(uid) != dataset_sha256(f):
            raise RuntimeError(f"{who}: {f.name} is not the dataset that was sent")
    return sum(f.stat().st_size for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20, help="images per run")
    ap.add_argument("--rows", type=int, default=3072)
    ap.add_argument("--columns", type=int, default=3072)
    ap.add_argument("--repeat", type=int, default=5,
                    help="runs of each sender, alternating order (medians of 5: the machine is shared)")
    ap.add_argument("--associations", type=int, default=1,
                    help="dxgate's associations to the destination (storescp serves one at a time)")
    args = ap.parse_args()
    configure_pynetdicom()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="dxgate-bench-forward-") as tmp:
        work = Path(tmp)
        files_dir, received = work / "files", work / "received"
        files_dir.mkdir()
        received.mkdir()
        instances = [make_dx(args.rows, args.columns, rng) for _ in range(args.count)]
        paths, expected = [], {}
        for uid, _study, data in instances:
            p = files_dir / f"{uid}.dcm"
            p.write_bytes(data)
            paths.append(p)
            expected[uid] = dataset_sha256(p)
        file_bytes = sum(len(d) for _, _, d in instances)

        port = free_port()
        log = open(work / "storescp.log", "wb")
        scp = subprocess.Popen([STORESCP, "--aetitle", "STORESCP", "--output-directory", str(received),
                                "--max-pdu", str(MAX_PDU), "+B", "--filename-extension", ".dcm", str(port)],
                               env=dict(os.environ, TCP_NODELAY="1"), stdout=log, stderr=subprocess.STDOUT)
        senders: dict[str, Callable[[], float]] = {
            "dxgate": lambda: time_dxgate(work, instances, port, args.associations),
            "storescu_tuned": lambda: time_storescu(paths, port, tuned=True),
            "storescu_default": lambda: time_storescu(paths, port, tuned=False),
        }
        runs: dict[str, list[float]] = {who: [] for who in senders}
        received_bytes: dict[str, int] = {}
        try:
            wait_for_port(port, scp, work / "storescp.log")
            for i in range(args.repeat):
                order = list(senders)[i % 3:] + list(senders)[:i % 3]
                for who in order:
                    for f in received.iterdir():
                        f.unlink()
                    runs[who].append(senders[who]())
                    received_bytes[who] = check_received(received, who, expected)
        finally:
            os.kill(scp.pid, signal.SIGTERM)
            scp.wait(timeout=10)
            log.close()

    mb = file_bytes / 1e6
    figures: dict[str, dict[str, Any]] = {}
    speed: dict[str, float] = {}
    for who, times in runs.items():
        med = statistics.median(times)
        speed[who] = round(mb / med, 1)
        figures[who] = {"mb_per_s": speed[who], "mb_per_s_best": round(mb / min(times), 1),
                        "seconds_median": round(med, 3),
                        "seconds_runs": [round(t, 3) for t in times], "received_bytes": received_bytes[who],
                        "cpu_s_median": round(statistics.median(CPU_S[who]), 3)}
    dx = speed["dxgate"]
    report = {
        "mb_per_s": dx,
        "ratio_to_storescu_tuned": round(dx / speed["storescu_tuned"], 3),
        "ratio_to_storescu_default": round(dx / speed["storescu_default"], 3),
        "ratio_to_storescu_tuned_best": round(figures["dxgate"]["mb_per_s_best"]
                                              / figures["storescu_tuned"]["mb_per_s_best"], 3),
        "dxgate": figures["dxgate"],
        "storescu_tuned": figures["storescu_tuned"],
        "storescu_default": figures["storescu_default"],
        "images": args.count, "rows": args.rows, "columns": args.columns, "mb_per_image": round(mb / args.count, 2),
        "total_mb": round(mb, 1), "max_pdu": MAX_PDU, "associations": args.associations, "repeat": args.repeat,
        "python": platform.python_version(), "pynetdicom": pynetdicom.__version__, "pydicom": pydicom.__version__,
        "cpus": os.cpu_count(),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
