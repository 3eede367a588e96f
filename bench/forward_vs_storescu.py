"""Forwarding throughput: dxgate's Forwarder against DCMTK storescu, both into DCMTK storescp.

Starts /usr/bin/storescp (TCP_NODELAY=1) on loopback, generates N DX-sized instances
(default 20 x 1536x1536 uint16, ~4.7 MB each) and times
  (a) dxgate: Forwarder.forward_due() sending the whole backlog over one association,
  (b) /usr/bin/storescu (TCP_NODELAY=1) sending the same files over one association.
Each is repeated; the JSON output gives every run, the median, MB/s and dxgate/storescu.

    .venv/bin/python bench/forward_vs_storescu.py [--count 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import pynetdicom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.dicom_inputs
from gateway.config import DestinationConfig  # noqa: E402
from gateway.dicom import to_bytes  # noqa: E402
from gateway.forward import Forwarder, Outcome  # noqa: E402
from gateway.spool import Spool  # noqa: E402
from tests.dicom_inputs import build_test_dx, make_frame  # noqa: E402
from tests.peers import free_port, wait_for_port  # noqa: E402

STORESCP = "/usr/bin/storescp"
STORESCU = "/usr/bin/storescu"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
MAX_PDU = 131072


def make_dx(rows: int, columns: int, rng: np.random.Generator) -> tuple[str, str, bytes]:
    """A DX-sized image from dxgate's own builder: (SOP Instance UID, Study UID, Part-10 bytes)."""
    ds = build_test_dx(frame=make_frame(rng.integers(0, 16384, size=(rows, columns), dtype=np.uint16)))
    return str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), to_bytes(ds)


def clear(directory: Path) -> None:
    for p in directory.iterdir():
        p.unlink()


def time_dxgate(work: Path, instances: list[tuple[str, str, bytes]], port: int) -> float:
    spool_dir = work / f"spool-{time.monotonic_ns()}"
    spool = Spool(spool_dir / "files", spool_dir / "state.db", min_free_bytes=0)
    try:
        for uid, study, data in instances:
            spool.put(data, sop_instance_uid=uid, sop_class_uid=DX_FOR_PRESENTATION, study_instance_uid=study,
                      accession_number="", destinations=["scp"])
        fwd = Forwarder(spool, [DestinationConfig(name="scp", host="127.0.0.1", port=port, called_ae="STORESCP",
                                                  max_pdu=MAX_PDU, timeout_s=120.0)], calling_ae="DXGATE")
        t0 = time.perf_counter()
        results = fwd.forward_due()
        elapsed = time.perf_counter() - t0
    finally:
        spool.close()
        shutil.rmtree(spool_dir)
    bad = [r for r in results if r.outcome is not Outcome.SENT]
    if len(results) != len(instances) or bad:
        raise RuntimeError(f"dxgate did not send everything: {bad[:3]}")
    return elapsed


def time_storescu(paths: list[Path], port: int) -> float:
    env = dict(os.environ, TCP_NODELAY="1")
    cmd = [STORESCU, "-aet", "DXGATE", "-aec", "STORESCP", "--required", "--max-pdu", str(MAX_PDU),
           "127.0.0.1", str(port), *map(str, paths)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"storescu failed ({out.returncode}): {out.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20, help="instances per run")
    ap.add_argument("--rows", type=int, default=1536)
    ap.add_argument("--columns", type=int, default=1536)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each sender (alternating)")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="dxgate-bench-") as tmp:
        work = Path(tmp)
        files_dir, received = work / "files", work / "received"
        files_dir.mkdir()
        received.mkdir()
        instances = [make_dx(args.rows, args.columns, rng) for _ in range(args.count)]
        paths = []
        for uid, _study, data in instances:
            p = files_dir / f"{uid}.dcm"
            p.write_bytes(data)
            paths.append(p)
        total_bytes = sum(len(d) for _, _, d in instances)

        port = free_port()
        log = open(work / "storescp.log", "wb")
        scp = subprocess.Popen([STORESCP, "--aetitle", "STORESCP", "--output-directory", str(received),
                                "--max-pdu", str(MAX_PDU), "--filename-extension", ".dcm", str(port)],
                               env=dict(os.environ, TCP_NODELAY="1"), stdout=log, stderr=subprocess.STDOUT)
        runs: dict[str, list[float]] = {"dxgate": [], "storescu": []}
        timers = {"dxgate": lambda: time_dxgate(work, instances, port),
                  "storescu": lambda: time_storescu(paths, port)}
        try:
            wait_for_port(port, scp, work / "storescp.log")
            for i in range(args.repeat):
                order = list(timers) if i % 2 == 0 else list(reversed(timers))
                for who in order:
                    clear(received)
                    seconds = timers[who]()
                    got = len(list(received.glob("*.dcm")))
                    if got != args.count:
                        raise RuntimeError(f"{who}: storescp holds {got} files, expected {args.count}")
                    runs[who].append(seconds)
        finally:
            os.kill(scp.pid, signal.SIGTERM)
            scp.wait(timeout=10)
            log.close()

    mb = total_bytes / 1e6
    report = {
        "instances": args.count,
        "rows": args.rows,
        "columns": args.columns,
        "total_mb": round(mb, 2),
        "max_pdu": MAX_PDU,
        "repeat": args.repeat,
        "python": platform.python_version(),
        "pynetdicom": pynetdicom.__version__,
        "pydicom": pydicom.__version__,
        "cpus": os.cpu_count(),
    }
    for who, times in runs.items():
        med = statistics.median(times)
        report[who] = {"seconds_median": round(med, 3), "seconds_runs": [round(t, 3) for t in times],
                       "mb_per_s_median": round(mb / med, 1)}
    report["ratio_dxgate_over_storescu_seconds"] = round(
        report["dxgate"]["seconds_median"] / report["storescu"]["seconds_median"], 2)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
