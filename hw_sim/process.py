"""The simulator as its own process: `python -m hw_sim --dir DIR` (or `dxgate-sim --dir DIR`).

Serves one room: the panel through a Unix socket that dxgate's `socket` pyusb backend opens,
the generator on a pseudo-terminal, and a control socket for the hand switch, ground truth
and fault injection. What it serves is written to DIR/sim.json (atomically, once everything
listens) and printed as one JSON line; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from hw_sim.control import ControlServer
from hw_sim.detector_model import MODES
from hw_sim.room import SimRoom
from hw_sim.usb_server import UsbSocketServer

LOGGER = logging.getLogger(__name__)


def serve(directory: Path, *, seed: int = 1, serial: str = "SIM-0001", modes: tuple[str, ...] = tuple(MODES),
          prep_time_s: float = 0.0, temperature_c: float = 30.0, stop: threading.Event | None = None,
          wireless: bool = False, sync_link: bool = False, heartbeat_timeout_s: float | None = None,
          frame_cache: int = 0) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    room = SimRoom(seed, serial=serial, modes=modes, prep_time_s=prep_time_s, temperature_c=temperature_c,
                   wireless=wireless, sync_link=sync_link, heartbeat_timeout_s=heartbeat_timeout_s,
                   frame_cache=frame_cache)
    port = room.start_generator()
    backend = room.usb_backend()
    usb_server = UsbSocketServer(backend, directory / "usb.sock")

    def unplug(gone: bool) -> None:
        (backend.unplug(serial) if gone else backend.plug(room.panel))

    control = ControlServer(room, directory / "control.sock", on_unplug=unplug)
    info: dict[str, Any] = {"pid": os.getpid(), "usb_socket": usb_server.path, "generator_port": port,
                            "control_socket": control.path, "serial": serial, "seed": seed}
    tmp = directory / "sim.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, directory / "sim.json")
    print(json.dumps(info), flush=True)
    try:
        stop.wait()
    finally:
        control.close()
        usb_server.close()
        room.close()
        (directory / "sim.json").unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw_sim", description="dxgate's simulated X-ray room")
    parser.add_argument("--dir", required=True, type=Path, help="where the sockets and sim.json go")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serial", default="SIM-0001")
    parser.add_argument("--modes", default=",".join(MODES), help=f"panel modes (of {', '.join(MODES)})")
    parser.add_argument("--prep-time", type=float, default=0.0, help="rotor spin-up on prepare, seconds")
    parser.add_argument("--temperature", type=float, default=30.0)
    parser.add_argument("--wireless", action="store_true", help="a battery panel: reports battery and link")
    parser.add_argument("--sync-link", action="store_true",
                        help="the generator fires only on the panel's EXP_OK (synchronised trigger)")
    parser.add_argument("--frame-cache", type=int, default=0,
                        help="benchmarks: reuse this many synthesised frames per exposure level (0: all new)")
    parser.add_argument("--heartbeat", type=float, default=None,
                        help="the generator withdraws a release after this many seconds without a host sentence")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="hw_sim %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    return serve(args.dir, seed=args.seed, serial=args.serial, modes=modes, prep_time_s=args.prep_time,
                 temperature_c=args.temperature, stop=stop, wireless=args.wireless,
                 sync_link=args.sync_link, heartbeat_timeout_s=args.heartbeat,
                 frame_cache=args.frame_cache)
