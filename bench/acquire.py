"""Acquisition through the real panel driver from the simulator process (`python -m hw_sim`).

The issue's figures, as JSON: `binned_fps`, `binned_frames`, `binned_dropped` (a `--seconds`
sequence of 1536 x 1536 at `--fps`; the goal is 60 s at 15 frames/s with 0 dropped), `full_fps`
(sustained 3072 x 3072 single shots, arm / read / check / ACK, correction excluded) and the
driver's CPU share (this process, where the driver runs, over the wall time and all cores)
during each. The simulator reuses a few synthesised frames per exposure level (--frame-cache),
so its physics is not what limits the figures. bench/panel_sequence.py does the work and
prints more detail (re-ordered and doubled frames, device vs host frame rate).

    .venv/bin/python bench/acquire.py [--seconds 60] [--fps 15] [--full-shots 20]
"""

from __future__ import annotations

import argparse
import json
import sys

from panel_sequence import measure  # bench/ is the script's directory, first on sys.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the binned sequence")
    ap.add_argument("--fps", type=float, default=15.0, help="frame rate of the binned sequence")
    ap.add_argument("--full-shots", type=int, default=20, help="3072 x 3072 single shots timed")
    args = ap.parse_args()
    if args.full_shots < 1:
        ap.error("--full-shots must be at least 1")
    m = measure(args.seconds, args.fps, "2x2", args.full_shots)
    report = {
        "full_fps": m["full_fps"],
        "full_shots": m["full_shots"],
        "full_driver_cpu_share": m["full_driver_cpu_share"],
        "binned_fps": m["binned_fps"],
        "binned_frames": m["binned_frames"],
        "binned_requested": m["requested_frames"],
        "binned_dropped": m["binned_dropped"],
        "binned_reordered": m["reordered"],
        "binned_doubled": m["doubled"],
        "binned_seconds": args.seconds,
        "binned_driver_cpu_share": m["driver_cpu_share"],
        "driver_cpu_share": m["driver_cpu_share"],
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
