"""`dxgate demo`: the whole path on embedded defaults, in one process, in under two minutes.

The simulator stands in for the hardware and is reached the way hardware is: through the
driver's seams (a pyusb backend and a serial pty), loaded by dotted path so that no
runtime module imports it. The RIS and PACS are embedded pynetdicom peers on loopback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

from drivers.registry import load_simulator
from gateway.app import Gateway
from gateway.config import (
    Config,
    DestinationConfig,
    DetectorConfig,
    ExposureConfig,
    GeneratorConfig,
    SpoolConfig,
    WorklistConfig,
    to_toml,
)
from gateway.dicom import new_uid
from gateway.peers import StorageServer, WorklistServer, make_worklist_entry

LOGGER = logging.getLogger(__name__)

SIMULATOR = "room"  # registered in the dxgate.simulators entry-point group
DEMO_PATIENTS = [("Doe^Jane", "F", "19680412"), ("Müller^Jürgen", "M", "19551103"),
                 ("Παπαδόπουλος^Νίκος", "M", "19790228"), ("Nakamura^Yuki", "F", "19900715")]
FORWARD_DEADLINE_S = 60.0


class SimulatedRoom(Protocol):
    """What the demo needs of the simulator: the hardware seams and a hand to place objects."""

    def usb_backend(self) -> Any: ...
    def start_generator(self) -> str: ...
    def place(self, scene: str) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class DemoImage:
    accession_number: str
    sop_instance_uid: str
    exposure_index: float | None
    deviation_index: float | None
    status: str


def demo_config(home: Path, generator_port: str, worklist_port: int, pacs_port: int) -> Config:
    return Config(
        state_dir=str(home),
        detector=DetectorConfig(mode="2x2"),
        exposure=ExposureConfig(kvp=80.0, mas=1.2),  # chest PA behind the phantom: EI near target
        generator=GeneratorConfig(port=generator_port),
        worklist=WorklistConfig(host="127.0.0.1", port=worklist_port, called_ae="DEMO_RIS"),
        spool=SpoolConfig(),
        destinations=(DestinationConfig(name="demo-pacs", host="127.0.0.1", port=pacs_port, called_ae="DEMO_PACS"),),
    )


def scheduled_entries(count: int, station_ae: str, uid_root: str, now: datetime) -> list[Any]:
    stamp = now.strftime("%y%m%d%H%M%S")
    entries = []
    for i in range(count):
        name, sex, birth = DEMO_PATIENTS[i % len(DEMO_PATIENTS)]
        entries.append(make_worklist_entry(
            patient_name=name, patient_id=f"DEMO{i + 1:04d}", birth_date=birth, sex=sex,
            accession=f"A{stamp}{i + 1:02d}", study_uid=new_uid(uid_root),
            requested_procedure_id=f"RP{i + 1:04d}", sps_id=f"SPS{i + 1:04d}",
            sps_description="Chest PA", station_ae=station_ae, start=now))
    return entries


def forward_until_done(gateway: Gateway, deadline_s: float) -> None:
    """Send the backlog; a transient failure is retried after its backoff, until the deadline."""
    deadline = time.monotonic() + deadline_s
    gateway.forward_due()
    while gateway.spool.counts().get("pending", 0) and time.monotonic() < deadline:
        next_at = gateway.spool.next_attempt_at() or time.time()
        time.sleep(min(max(0.0, next_at - time.time()), max(0.0, deadline - time.monotonic())))
        gateway.forward_due()


def run_demo(*, home: Path | None, exposures: int, as_json: bool, out: TextIO) -> int:
    made_home = home is None
    home = Path(tempfile.mkdtemp(prefix="dxgate-demo-")) if home is None else home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    now = datetime.now(UTC)
    room: SimulatedRoom = load_simulator(SIMULATOR)(seed=7)
    defaults = Config()
    wl = WorklistServer(scheduled_entries(exposures, defaults.site.ae_title, defaults.site.uid_root, now),
                        ae_title="DEMO_RIS")
    pacs = StorageServer(home / "pacs", ae_title="DEMO_PACS")
    gateway: Gateway | None = None
    try:
        config = demo_config(home, room.start_generator(), wl.start(), pacs.start())
        (home / "dxgate.toml").write_text(
            "# The configuration `dxgate demo` ran with (simulator, embedded peers on loopback).\n"
            + to_toml(config), encoding="utf-8")
        gateway = Gateway(config, usb_backend=room.usb_backend())
        calibrated = False
        if not gateway.has_calibration():
            room.place("open")
            gateway.calibrate(operator="demo")
            calibrated = True
        items = gateway.worklist().items
        if not items:
            raise RuntimeError("the embedded worklist returned no scheduled step")
        room.place("chest")
        acquired = []
        for n in range(exposures):
            exam = gateway.open_exam(items[n % len(items)])
            acquired.append(gateway.expose(exam))
        forward_until_done(gateway, FORWARD_DEADLINE_S)
        images = []
        for acq in acquired:
            states = {d.destination: d.state for d in gateway.spool.deliveries(acq.instance.sop_instance_uid)}
            images.append(DemoImage(
                accession_number=acq.instance.accession_number, sop_instance_uid=acq.instance.sop_instance_uid,
                exposure_index=round(acq.exposure_index.ei, 1) if acq.exposure_index else None,
                deviation_index=round(acq.exposure_index.deviation_index, 2) if acq.exposure_index else None,
                status=",".join(f"{k}:{v}" for k, v in sorted(states.items()))))
    finally:
        if gateway is not None:
            gateway.close()
        wl.stop()
        pacs.stop()
        room.close()
    summary = {"home": str(home), "calibrated_now": calibrated, "seconds": round(time.monotonic() - started, 1),
               "received_by_pacs": len(list((home / "pacs").glob("*.dcm"))),
               "images": [dataclasses.asdict(img) for img in images]}
    if as_json:
        json.dump(summary, out, indent=2)
        out.write("\n")
    else:
        for img in images:
            index = (f"EI={img.exposure_index:g} DI={img.deviation_index:+.1f}"
                     if img.exposure_index is not None and img.deviation_index is not None else "EI=n/a")
            out.write(f"{img.accession_number}  {img.sop_instance_uid}  {index}  {img.status}\n")
        out.write(f"{len(images)} image(s) in {summary['seconds']} s; "
                  f"calibration {'made now' if calibrated else 'reused'}; "
                  f"PACS copies in {home / 'pacs'}\n")
        if made_home:
            out.write(f"everything this run made is under {home}\n")
    return 0 if all(part.endswith(":sent") for img in images for part in img.status.split(",")) else 1
