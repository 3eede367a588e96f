"""A whole gateway in its own process, for the kill -9 test: acquire and forward until killed.

argv: state_dir pacs_port seed. Prints "ready" once calibrated, then "saved <uid>" for every
exposure the gateway acknowledged as saved (flushed at once, as a console would show it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.app import Gateway
from gateway.config import CalibrationConfig, Config, DestinationConfig, DetectorConfig, GeneratorConfig, ReviewConfig
from hw_sim.room import SimRoom


def main() -> None:
    state_dir, pacs_port, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    room = SimRoom(seed=seed)
    config = Config(state_dir=str(state_dir), detector=DetectorConfig(mode="8x8"),
                    generator=GeneratorConfig(port=room.start_generator()),
                    calibration=CalibrationConfig(dark_frames=4, flat_frames=4),
                    review=ReviewConfig(hold_s=0),  # forwarded while acquiring: the kill hits both at once
                    destinations=(DestinationConfig(name="pacs", port=pacs_port, called_ae="STORESCP"),))
    gw = Gateway(config, usb_backend=room.usb_backend())
    if not gw.has_calibration():
        gw.calibrate()
    room.place("chest")
    gw.start_forwarding()
    print("ready", flush=True)
    exam = gw.open_exam(None)
    while True:
        image = gw.expose(exam)
        print("saved", image.instance.sop_instance_uid, flush=True)


if __name__ == "__main__":
    main()
