"""A binned fluoroscopy-style sequence through the real pyusb driver from the simulator process.

Starts `python -m hw_sim` (the panel served over its Unix socket, as `dxgate run` reaches it),
opens the panel with the `socket` pyusb backend and reads `--seconds` x `--fps` frames of
1536 x 1536 (mode 2x2). Counts frames dropped (frame-counter gaps), re-ordered (a number not
above the one before) and doubled, and the frame rate achieved on the panel's clock (device
timestamps) and the host's. Then `--full-shots` single 3072 x 3072 frames (arm, read, check,
ACK) give `full_fps`; the simulator reuses a few synthesised frames (`--frame-cache`), so its
physics is not what limits the figure. Prints JSON.

    .venv/bin/python bench/panel_sequence.py [--seconds 60] [--fps 15] [--mode 2x2] [--full-shots 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drivers import registry
from drivers.usb_panel.driver import UsbPanelDetector
from gateway.types import FrameKind


def start_simulator(directory: Path, modes: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "hw_sim", "--dir", str(directory), "--modes", modes,
                             "--frame-cache", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    proc.stdout.readline()  # one JSON line once everything listens
    return proc


def full_shots(det: UsbPanelDetector, n: int) -> tuple[float, float]:
    """Sustained 3072 x 3072 single shots per second (after the simulator's cache is warm), and
    the share of the machine's CPU this process (the driver) used meanwhile."""
    det.set_mode("1x1")
    for _ in range(4):
        det.arm(FrameKind.DARK)
        det.read_frame(60)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        det.arm(FrameKind.DARK)
        det.read_frame(60)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return round(n / wall, 2), round(cpu / wall / (os.cpu_count() or 1), 3)


def measure(seconds: float, fps: float, mode: str = "2x2", full: int = 20) -> dict[str, object]:
    """A `seconds` x `fps` sequence in `mode`, then `full` 3072 x 3072 single shots (0: none),
    all through the real driver from the simulator process; the figures as a dict."""
    count = round(seconds * fps)
    full_fps = full_cpu = None
    with tempfile.TemporaryDirectory(prefix="dxgate-sequence-") as tmp:
        sim = start_simulator(Path(tmp), mode + (",1x1" if full else ""))
        backend = registry.open_usb_backend("socket", path=str(Path(tmp) / "usb.sock"))
        try:
            det: UsbPanelDetector = registry.open_detector("usb_panel", backend=backend, mode=mode)
            numbers, stamps = [], []
            cpu0, t0 = time.process_time(), time.perf_counter()
            try:
                for frame in det.sequence(count, fps=fps, kind=FrameKind.EXPOSED):
                    numbers.append(frame.meta.frame_number)
                    stamps.append(frame.meta.acquired_at)
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                if full:
                    full_fps, full_cpu = full_shots(det, full)
            finally:
                det.close()
        finally:
            backend.close()
            sim.terminate()
            sim.wait(timeout=30)
    gaps = sum(b - a - 1 for a, b in zip(numbers, numbers[1:], strict=False) if b > a + 1)
    reordered = sum(1 for a, b in zip(numbers, numbers[1:], strict=False) if b <= a)
    span = (stamps[-1] - stamps[0]).total_seconds()
    return {
        "mode": mode,
        "requested_frames": count,
        "requested_fps": fps,
        "frames": len(numbers),
        "dropped": gaps + (count - len(numbers)),
        "reordered": reordered,
        "doubled": len(numbers) - len(set(numbers)),
        "achieved_fps": round((len(numbers) - 1) / span, 3) if span > 0 else None,
        "host_fps": round(len(numbers) / wall, 3),
        "wall_s": round(wall, 2),
        "driver_cpu_share": round(cpu / wall / (os.cpu_count() or 1), 3),
        "driver_cpu_s": round(cpu, 2),
        "binned_fps": round((len(numbers) - 1) / span, 3) if span > 0 else None,
        "binned_frames": len(numbers),
        "binned_dropped": gaps + (count - len(numbers)),
        "full_fps": full_fps,
        "full_driver_cpu_share": full_cpu,
        "full_shots": full,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--mode", default="2x2")
    ap.add_argument("--full-shots", type=int, default=20, help="3072 x 3072 single shots (0: none)")
    args = ap.parse_args()
    json.dump(measure(args.seconds, args.fps, args.mode, args.full_shots), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
