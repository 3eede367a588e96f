"""The daemon's memory housekeeping (gateway.service.memory), measured on a real process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from gateway.service.memory import _library_mappings

CHILD = textwrap.dedent("""
    import json, numpy as np
    from gateway.presentation import present, warm_up
    from gateway.service.memory import release_compiler_pages

    def llvm_resident():
        total, ours = 0, False
        for line in open("/proc/self/smaps"):
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                ours = "libllvmlite" in line
            elif ours and head == "Rss:":
                total += int(line.split()[1]) * 1024
        return total

    warm_up()
    before = llvm_resident()
    released = release_compiler_pages()
    after = llvm_resident()
    frame = (np.arange(128 * 128, dtype=np.uint16).reshape(128, 128) % 4000) + 500
    pixels = present(frame, pixel_spacing_mm=(0.15, 0.15)).pixels  # the loaded kernel still runs
    import numba
    again = numba.njit(lambda x: x * 3)(7)  # and LLVM still compiles: its pages fault back in
    print(json.dumps({"before": before, "released": released, "after": after,
                      "checksum": int(pixels.astype(np.int64).sum()), "again": again}))
""")


def test_the_compiler_pages_go_back_and_numba_still_works() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["before"] > 40 << 20  # LLVM's code is resident after loading the kernels (about 80 MB here)
    assert r["after"] < r["before"] // 4 and r["released"] >= r["before"] // 2
    assert r["checksum"] > 0 and r["again"] == 21


SMAPS = """\
7f0000000000-7f0000100000 r-xp 00000000 08:01 42 /venv/llvmlite/binding/libllvmlite.so
Rss:                1024 kB
Anonymous:             0 kB
Shared_Dirty:          0 kB
Private_Dirty:         0 kB
7f0000100000-7f0000200000 r--p 00100000 08:01 42 /venv/llvmlite/binding/libllvmlite.so
Rss:                 512 kB
Anonymous:             0 kB
Shared_Dirty:          0 kB
Private_Dirty:         8 kB
7f0000200000-7f0000300000 rw-p 00200000 08:01 42 /venv/llvmlite/binding/libllvmlite.so
Rss:                  64 kB
Anonymous:            64 kB
Shared_Dirty:          0 kB
Private_Dirty:        64 kB
7f0000300000-7f0000400000 r-xp 00000000 08:01 43 /usr/lib/libc.so.6
Rss:                 900 kB
Anonymous:             0 kB
Shared_Dirty:          0 kB
Private_Dirty:         0 kB
"""


def test_only_clean_read_only_mappings_of_the_compiler_are_released() -> None:
    """A writable mapping or one with a private dirty page (relocations) may hold what the file
    does not: dropping it would corrupt the process, so it is never chosen."""
    assert _library_mappings(SMAPS.splitlines(keepends=True), ("libllvmlite",)) == [
        (0x7F0000000000, 0x7F0000100000, 1024 * 1024)]
