"""Exposure-to-saved latency per stage, and forwarding, on the simulator and an embedded PACS.

For N exposures of a 2x2 (1536 x 1536) frame: seconds spent acquiring (simulator makes the
frame, USB transfer through the real pyusb driver), correcting, building and encoding the DX
object, and spooling (fsync + rename + SQLite commit: the 'saved' moment); then the time to
forward the backlog. The spool is compared with its floor in the same run: writing and
fsyncing the same bytes to a plain file. Prints JSON.

    .venv/bin/python bench/exposure_latency.py [--exposures 10] [--mode 2x2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from drivers.registry import load_simulator
from gateway.app import Gateway
from gateway.config import CalibrationConfig, Config, DestinationConfig, DetectorConfig, GeneratorConfig, ReviewConfig
from gateway.peers import StorageServer


def fsync_floor(data: bytes, directory: Path) -> float:
    path = directory / "floor.bin"
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    elapsed = time.perf_counter() - t0
    path.unlink()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exposures", type=int, default=10)
    ap.add_argument("--mode", default="2x2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dxgate-latency-") as tmp:
        home = Path(tmp)
        room = load_simulator("room")(seed=3)
        pacs = StorageServer(home / "pacs", ae_title="PACS")
        config = Config(state_dir=str(home / "state"), detector=DetectorConfig(mode=args.mode),
                        generator=GeneratorConfig(port=room.start_generator()),
                        calibration=CalibrationConfig(dark_frames=8, flat_frames=8),
                        review=ReviewConfig(hold_s=0),  # the backlog is forwarded at once: no review hold
                        destinations=(DestinationConfig(name="pacs", port=pacs.start(), called_ae="PACS"),))
        try:
            with Gateway(config, usb_backend=room.usb_backend()) as gw:
                room.place("open")
                t0 = time.perf_counter()
                gw.calibrate()
                calibrate_s = time.perf_counter() - t0
                room.place("chest")
                exam = gw.open_exam(None)
                images = [gw.expose(exam) for _ in range(args.exposures)]
                t0 = time.perf_counter()
                results = gw.forward_due()
                forward_s = time.perf_counter() - t0
                assert all(r.outcome == "sent" for r in results) and len(results) == args.exposures
                floor = [fsync_floor(Path(images[0].instance.path).read_bytes(), home) for _ in range(5)]
        finally:
            pacs.stop()
            room.close()
    stages = {k: [img.stage_seconds[k] for img in images] for k in images[0].stage_seconds}
    total = [sum(img.stage_seconds.values()) for img in images]
    report = {
        "mode": args.mode,
        "exposures": args.exposures,
        "image_mb": round(images[0].instance.size / 1e6, 2),
        "calibration_s": round(calibrate_s, 2),
        "stage_ms_median": {k: round(statistics.median(v) * 1e3, 1) for k, v in stages.items()},
        "exposure_to_saved_ms": {"median": round(statistics.median(total) * 1e3, 1),
                                 "max": round(max(total) * 1e3, 1)},
        "spool_vs_plain_fsync_write_ratio": round(statistics.median(stages["spool"]) / statistics.median(floor), 2),
        "forward_backlog_s": round(forward_s, 3),
        "forward_mb_per_s": round(args.exposures * images[0].instance.size / 1e6 / forward_s, 1),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
