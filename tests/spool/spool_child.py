"""Child process for the kill -9 test: spools instances in a loop, printing each acknowledged UID.

Run as `python -m tests.spool.spool_child <spool dir> <database> <seed>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from gateway.spool import Spool
from tests.spool.objects import make_object, put


def main() -> None:
    root, db, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    spool = Spool(root, db, min_free_bytes=0)
    print("ready", flush=True)
    i = 0
    while True:
        size = int(rng.choice([64, 256, 512]))  # up to 512 KiB: the kill lands mid-write too
        obj = make_object(size, size, pixels=np.full((size, size), i % 4096, dtype=np.uint16))
        put(spool, obj)
        print(obj.sop_instance_uid, flush=True)  # acknowledged: the exposure is "saved"
        i += 1


if __name__ == "__main__":
    main()
