"""Time Corrector.apply on a full-size 1x1 (3072 x 3072) frame against the memory floor.

The floor is np.copyto of a float32 frame of the same shape into a preallocated float32 array,
timed in the same run: correction reads a raw frame and two float32 maps and writes a frame, so
it cannot beat a copy of that size by much. apply() writes into a preallocated output frame
(no allocation per frame); apply_allocating_output_ms_median is the default apply() that
allocates its output, as the pipeline calls it. Also reports what a loaded corrector keeps
resident (its compact maps and repair tables; the RSS that loading a set from a store and making
its Corrector left behind, malloc tuned as `dxgate run` does) and the peak RSS. Prints JSON.
Run: .venv/bin/python bench/correction.py [--repeats N] [--mode 1x1]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from gateway.correction import CalibrationStore, Corrector, calibrate
from gateway.service.memory import tune_malloc
from gateway.types import FrameKind, FrameMeta, RawFrame
from hw_sim.detector_model import BITS_STORED, DetectorModel


def raw_frame(model: DetectorModel, n: int, kerma_ugy: float) -> RawFrame:
    meta = FrameMeta(frame_number=n, detector_serial="BENCH-1", mode=model.mode, rows=model.rows,
                     columns=model.columns, bits_stored=BITS_STORED,
                     kind=FrameKind.EXPOSED if kerma_ugy > 0 else FrameKind.DARK,
                     temperature_c=model.temperature_c, acquired_at=datetime.now(UTC), crc32=0)
    return RawFrame(pixels=model.frame(kerma_ugy, "chest" if kerma_ugy and n > 100 else "open"), meta=meta)


def rss_bytes() -> int:
    """Resident set size now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
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
    parser.add_argument("--mode", default="1x1")
    parser.add_argument("--frames", type=int, default=4, help="darks and flats each for the calibration")
    args = parser.parse_args()

    model = DetectorModel(args.mode, seed=1)
    t0 = time.perf_counter()
    darks = [raw_frame(model, i, 0.0) for i in range(args.frames)]
    flats = [raw_frame(model, 10 + i, 10.0) for i in range(args.frames)]
    lag = [raw_frame(model, 99, 0.0)]
    t1 = time.perf_counter()
    tracemalloc.start()
    cal = calibrate(darks, flats, lag_darks=lag, flat_kerma_ugy=10.0, operator="bench")
    calibrate_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t2 = time.perf_counter()
    del darks, flats, lag
    defects_repaired = int(np.count_nonzero(cal.defects))
    # A loaded 1x1 corrector as the daemon keeps it (malloc tuned as `dxgate run` does): the set
    # is read from a store, made into a Corrector, and dropped; the RSS it leaves behind.
    tune_malloc()
    store = CalibrationStore(Path(tempfile.mkdtemp(prefix="bench-cal-")))
    store.save(cal)
    key = cal.key
    Corrector(cal)  # compiled (or loaded from numba's cache) once, outside the measurement
    del cal
    gc.collect()
    rss_before = rss_bytes()
    t3 = time.perf_counter()
    corrector = Corrector(store.load(key))
    t4 = time.perf_counter()
    gc.collect()
    corrector_rss = rss_bytes() - rss_before
    shutil.rmtree(store.directory)
    frame = raw_frame(model, 101, 5.0)
    src = np.empty(frame.pixels.shape, np.float32)
    src[...] = frame.pixels
    dst = np.empty_like(src)

    alloc_ms = timed(lambda: corrector.apply(frame), args.repeats)
    out = np.empty(frame.pixels.shape, np.uint16)
    apply_ms = timed(lambda: corrector.apply(frame, out=out), args.repeats)
    copy_ms = timed(lambda: np.copyto(dst, src), args.repeats)
    truth = model.truth
    print(json.dumps({
        "mode": args.mode,
        "shape": list(frame.pixels.shape),
        "frame_mb": frame.pixels.nbytes / 1e6,
        "repeats": args.repeats,
        "cv2_threads": cv2.getNumThreads(),
        "defects_repaired": defects_repaired,
        "defects_true": int(truth.defective.sum()),
        f"make_{2 * args.frames}_frames_s": round(t1 - t0, 3),
        f"calibrate_s_{2 * args.frames}_frames": round(t2 - t1, 3),
        "calibrate_peak_mb_beyond_frames": round(calibrate_peak / 1e6, 1),
        "corrector_init_s": round(t4 - t3, 4),
        "corrector_resident_mb": round(corrector.resident_bytes / 1e6, 1),  # its arrays' bytes
        "corrector_rss_delta_mb": round(corrector_rss / 1e6, 1),  # what loading it left in the process
        "map_dtypes": [str(corrector.maps.offset_q.dtype), str(corrector.maps.gain_q.dtype)],
        "apply_ms_median": round(statistics.median(apply_ms), 3),
        "apply_ms_min": round(min(apply_ms), 3),
        "apply_allocating_output_ms_median": round(statistics.median(alloc_ms), 3),
        "float32_copy_ms_median": round(statistics.median(copy_ms), 3),
        "float32_copy_ms_min": round(min(copy_ms), 3),
        "ratio_to_float32_copy": round(statistics.median(apply_ms) / statistics.median(copy_ms), 2),
        "ratio_min": round(min(apply_ms) / min(copy_ms), 2),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
