"""Child process for the raw-store kill -9 test: keeps frames in a loop, printing each kept id.

Run as `python -m tests.acquisition.raw_child <raw dir> <seed>`.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from gateway.acquisition.raw_store import RawStore
from gateway.types import Exposure, ExposureReadback, FrameKind, FrameMeta, RawFrame, Technique


def frame(n: int, size: int) -> RawFrame:
    pixels = np.full((size, size), n % 60000, dtype=np.uint16)
    meta = FrameMeta(frame_number=n, detector_serial="SIM-0001", mode="2x2", rows=size, columns=size,
                     bits_stored=16, kind=FrameKind.EXPOSED, temperature_c=30.0,
                     acquired_at=datetime.now(UTC), crc32=0)
    return RawFrame(pixels=pixels, meta=meta)


def main() -> None:
    store, seed = RawStore(Path(sys.argv[1])), int(sys.argv[2])
    rng = np.random.default_rng(seed)
    exposure = Exposure(requested=Technique(80, 2), actual=ExposureReadback(80.1, 2.01, 10.0, 0.01),
                        started_at=datetime.now(UTC))
    print("ready", flush=True)
    n = 1
    while True:
        size = int(rng.choice([256, 768, 1536]))  # up to 4.7 MB: the kill lands mid-write too
        kept = store.keep(frame(n, size), exposure, {"n": n}, now=datetime.now(UTC))
        print(kept, flush=True)  # acknowledged
        n += 1


if __name__ == "__main__":
    main()
