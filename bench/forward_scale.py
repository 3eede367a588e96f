"""Zero loss at scale, with the speed beside it: prints JSON.

1. Chaos: N small DX images (default 10,000, 64x64) are spooled, then forwarded to DCMTK
   storescp (bit-preserving, a unique file per reception) by a child process that is killed
   with SIGKILL at random points of the stream (--kills) and restarted each time. The
   archive's own files are then compared with the spool: lost, duplicated in content and
   corrupted must all be 0 (tests/forward/chaos.py).
2. Speed, in the same run: the same N files sent once more by dxgate's Forwarder (one
   uninterrupted pass, fresh spool) and by /usr/bin/storescu (TCP_NODELAY=1, same max PDU,
   one association) into a second storescp; images/s and the ratio dxgate / storescu.

    .venv/bin/python bench/forward_scale.py [--count 10000] [--kills 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
import pynetdicom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.forward.chaos
from gateway.config import DestinationConfig  # noqa: E402
from gateway.forward import Forwarder, Outcome  # noqa: E402
from gateway.netopts import configure_pynetdicom  # noqa: E402
from gateway.spool import Spool  # noqa: E402
from tests.forward.chaos import STORESCP_ARGS, Image, make_images, populate, run_chaos  # noqa: E402
from tests.peers import StoreSCP  # noqa: E402

STORESCU = "/usr/bin/storescu"
MAX_PDU = 131072


def time_dxgate(work: Path, images: list[Image], scp: StoreSCP) -> float:
    with Spool(work / "spool", work / "state.db", min_free_bytes=0) as spool:
        populate(spool, images)
        fwd = Forwarder(spool, [DestinationConfig(name="archive", host="127.0.0.1", port=scp.port, called_ae=scp.aet,
                                                  max_pdu=MAX_PDU, timeout_s=60.0)],
                        calling_ae="DXGATE", batch_size=len(images))
        t0 = time.perf_counter()
        results = fwd.forward_due()
        elapsed = time.perf_counter() - t0
    if len(results) != len(images) or any(r.outcome is not Outcome.SENT for r in results):
        raise RuntimeError("dxgate did not send every image")
    return elapsed


def time_storescu(files: Path, scp: StoreSCP) -> float:
    cmd = [STORESCU, "-aet", "DXGATE", "-aec", scp.aet, "--max-pdu", str(MAX_PDU), "+sd", "+r", "+sp", "*.dcm",
           "127.0.0.1", str(scp.port), str(files)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=dict(os.environ, TCP_NODELAY="1"), capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"storescu failed ({out.returncode}): {out.stderr[-2000:]}")
    return elapsed


def received(scp: StoreSCP) -> int:
    return sum(1 for _ in scp.out_dir.iterdir())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000, help="images")
    ap.add_argument("--kills", type=int, default=10, help="SIGKILLs of the forwarding process")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--columns", type=int, default=64)
    args = ap.parse_args()
    configure_pynetdicom()
    random.seed(args.seed)

    with tempfile.TemporaryDirectory(prefix="dxgate-scale-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        images = list(make_images(args.count, seed=args.seed, rows=args.rows, columns=args.columns))
        made_s = time.perf_counter() - t0
        total_mb = sum(len(im.data) for im in images) / 1e6

        dirs = {name: work / name for name in ("chaos", "chaos-archive", "speed", "speed-archive")}
        for d in dirs.values():
            d.mkdir()
        archive = StoreSCP(dirs["chaos-archive"], args=STORESCP_ARGS).start()
        try:
            tally = run_chaos(dirs["chaos"], images, kills=args.kills, port=archive.port,
                              archive_dir=archive.out_dir, seed=args.seed, timeout_s=3600.0)
        finally:
            archive.stop()

        speed = StoreSCP(dirs["speed-archive"], args=("+B",)).start()
        try:
            dxgate_s = time_dxgate(dirs["speed"], images, speed)
            if received(speed) != args.count:
                raise RuntimeError(f"storescp holds {received(speed)} files after dxgate, expected {args.count}")
            shutil.rmtree(speed.out_dir)
            speed.out_dir.mkdir()
            storescu_s = time_storescu(dirs["speed"] / "spool", speed)
            if received(speed) != args.count:
                raise RuntimeError(f"storescp holds {received(speed)} files after storescu, expected {args.count}")
        finally:
            speed.stop()

    report = {
        "images": args.count,
        "rows": args.rows,
        "columns": args.columns,
        "total_mb": round(total_mb, 2),
        "images_made_s": round(made_s, 1),
        "chaos": tally.as_dict(),
        "lost": tally.lost,
        "duplicated_in_content": tally.duplicated_in_content,
        "corrupted": tally.corrupted,
        "dxgate": {"seconds": round(dxgate_s, 2), "images_per_s": round(args.count / dxgate_s, 1),
                   "mb_per_s": round(total_mb / dxgate_s, 2)},
        "storescu": {"seconds": round(storescu_s, 2), "images_per_s": round(args.count / storescu_s, 1),
                     "mb_per_s": round(total_mb / storescu_s, 2)},
        "throughput_ratio_to_storescu": round(storescu_s / dxgate_s, 3),
        "max_pdu": MAX_PDU,
        "python": platform.python_version(),
        "pynetdicom": pynetdicom.__version__,
        "pydicom": pydicom.__version__,
        "cpus": os.cpu_count(),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.exit(0 if tally.clean else 1)


if __name__ == "__main__":
    main()
