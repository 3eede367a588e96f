"""Presentation processing time at 3072x3072 (JSON): the median of N runs of
gateway.presentation.present on a noisy two-level frame, and the floor of one float32 copy of
the same size timed in the same run.

    .venv/bin/python bench/presentation.py [--runs 10] [--side 3072]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from gateway.presentation import PresentationParams, present


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--side", type=int, default=3072)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    dose = np.full((args.side, args.side), 20000.0)
    dose[:, args.side // 2:] = 2000.0
    frame = rng.poisson(dose).astype(np.uint16)
    out: dict[str, object] = {"side": args.side, "runs": args.runs}
    for name, params in (("default", PresentationParams()), ("with_clahe", PresentationParams(clahe_clip=2.0))):
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            present(frame, pixel_spacing_mm=(0.139, 0.139), params=params)
            times.append(time.perf_counter() - t)
        out[f"{name}_ms_median"] = round(statistics.median(times) * 1000, 1)
    a = frame.astype(np.float32)
    b = np.empty_like(a)
    floor = []
    for _ in range(args.runs):
        t = time.perf_counter()
        np.copyto(b, a)
        floor.append(time.perf_counter() - t)
    out["float32_copy_ms_median"] = round(statistics.median(floor) * 1000, 2)
    out["ratio_default_to_copy"] = round(float(out["default_ms_median"]) / max(out["float32_copy_ms_median"], 1e-6), 1)  # type: ignore[arg-type]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
