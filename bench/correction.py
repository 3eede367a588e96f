"""Time Corrector.apply on a 2x2-binned (1536 x 1536) frame against a plain memory copy.

The memory-copy floor is np.copyto of the same uint16 frame into a preallocated array:
correction reads a frame and writes one, so it can never beat that. Prints JSON.
Run: .venv/bin/python bench/correction.py [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime

import cv2
import numpy as np

from gateway.correction import Corrector, calibrate
from gateway.types import FrameKind, FrameMeta, RawFrame
from hw_sim.detector_model import BITS_STORED, DetectorModel


def raw_frame(model: DetectorModel, n: int, kerma_ugy: float) -> RawFrame:
    meta = FrameMeta(frame_number=n, detector_serial="BENCH-1", mode=model.mode, rows=model.rows,
                     columns=model.columns, bits_stored=BITS_STORED,
                     kind=FrameKind.EXPOSED if kerma_ugy > 0 else FrameKind.DARK,
                     temperature_c=model.temperature_c, acquired_at=datetime.now(UTC), crc32=0)
    return RawFrame(pixels=model.frame(kerma_ugy, "chest" if kerma_ugy and n > 100 else "open"), meta=meta)


def timed(fn, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    fn()  # warm up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--mode", default="2x2")
    args = parser.parse_args()

    model = DetectorModel(args.mode, seed=1)
    t0 = time.perf_counter()
    darks = [raw_frame(model, i, 0.0) for i in range(8)]
    flats = [raw_frame(model, 10 + i, 10.0) for i in range(8)]
    t1 = time.perf_counter()
    cal = calibrate(darks, flats, flat_kerma_ugy=10.0, operator="bench")
    t2 = time.perf_counter()
    corrector = Corrector(cal)
    t3 = time.perf_counter()
    frame = raw_frame(model, 101, 5.0)
    dst = np.empty_like(frame.pixels)

    apply_ms = timed(lambda: corrector.apply(frame), args.repeats)
    copy_ms = timed(lambda: np.copyto(dst, frame.pixels), args.repeats)
    copy_alloc_ms = timed(lambda: frame.pixels.copy(), args.repeats)
    truth = model.truth
    print(json.dumps({
        "mode": args.mode,
        "shape": list(frame.pixels.shape),
        "frame_mb": frame.pixels.nbytes / 1e6,
        "repeats": args.repeats,
        "cv2_threads": cv2.getNumThreads(),
        "defects_repaired": int(np.count_nonzero(cal.defects)),
        "defects_true": int(truth.defective.sum()),
        "calibrate_s_16_frames": round(t2 - t1, 3),
        "make_16_frames_s": round(t1 - t0, 3),
        "corrector_init_s": round(t3 - t2, 4),
        "apply_ms_median": round(statistics.median(apply_ms), 3),
        "apply_ms_min": round(min(apply_ms), 3),
        "memcopy_ms_median": round(statistics.median(copy_ms), 3),
        "memcopy_ms_min": round(min(copy_ms), 3),
        "memcopy_alloc_ms_median": round(statistics.median(copy_alloc_ms), 3),
        "ratio_median": round(statistics.median(apply_ms) / statistics.median(copy_ms), 2),
        "ratio_min": round(min(apply_ms) / min(copy_ms), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
