"""Done means, for the daemon: the simulator, Orthanc (RIS and PACS) and `dxgate run` as three
processes; the technologist's hand switch (the simulator's control socket) makes the images.

- three exposures of a worklist entry arrive at Orthanc, with the worklist's patient;
- SIGTERM just after an image is saved (forwarding under way), restart: every saved image is
  in the archive exactly once;
- SIGHUP with a second destination: the next image goes there too.
The archive's own REST API and DCMTK's received files are the truth, never dxgate's counters.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pydicom
import pytest

from gateway.config import (
    ApiConfig,
    CalibrationConfig,
    Config,
    DestinationConfig,
    DetectorConfig,
    GeneratorConfig,
    ReviewConfig,
    SpoolConfig,
    WorklistConfig,
    to_toml,
)
from gateway.peers import make_worklist_entry, worklist_file_bytes
from tests.peers import Orthanc, StoreSCP, free_port
from tests.service.processes import DaemonProcess, SimProcess, add_user, calibrate, login, until

pytestmark = pytest.mark.peers

ACCESSION = "ACC4711"
PATIENT = "Kim^Minji"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    s = SimProcess(tmp_path / "sim").start("--seed", "7")
    try:
        yield s
    finally:
        s.stop()


def write_config(path: Path, state: Path, sim: SimProcess, orthanc: Orthanc, api_port: int,
                 extra: tuple[DestinationConfig, ...] = ()) -> None:
    cfg = Config(state_dir=str(state),
                 detector=DetectorConfig(mode="8x8", usb_backend="socket",
                                         backend_options={"path": sim.info["usb_socket"]}),
                 generator=GeneratorConfig(port=sim.info["generator_port"]),
                 calibration=CalibrationConfig(dark_frames=4, flat_frames=4),
                 worklist=WorklistConfig(port=orthanc.dicom_port, called_ae=orthanc.aet, timeout_s=5.0),
                 spool=SpoolConfig(min_free_mb=0), api=ApiConfig(port=api_port),
                 review=ReviewConfig(hold_s=0),  # each image goes at once: the test waits for it at the archive
                 destinations=(DestinationConfig(name="orthanc", port=orthanc.dicom_port, called_ae=orthanc.aet),
                               *extra))
    path.write_text(to_toml(cfg))


def expose(sim: SimProcess, c: httpx.Client, n_before: int) -> str:
    """The technologist waits for the ready light, presses the hand switch; the image is saved."""
    until(lambda: sim.call("status")["generator_state"] == "ENABLED", what="release to the hand switch")
    pulses = sim.call("status")["pulses"]
    assert sim.call("press")["fired"]
    assert sim.call("status")["pulses"] == pulses + 1
    images = until(lambda: (lambda i: i if len(i) > n_before else None)(c.get("/api/exam").json()["images"]),
                   what="the image after the exposure")
    return str(images[-1]["sop_instance_uid"])


def open_exam_and_arm(c: httpx.Client, csrf: dict[str, str]) -> None:
    r = c.post("/api/exam", json={"accession_number": ACCESSION}, headers=csrf)
    assert r.status_code == 200, r.text
    r = c.post("/api/exam/view", json={"body_part": "CHEST", "view_position": "PA", "kvp": 80, "mas": 1.2},
               headers=csrf)
    assert r.status_code == 200, r.text
    assert c.post("/api/exam/arm", json={"armed": True}, headers=csrf).status_code == 200


def archive_uids(orthanc: Orthanc) -> list[str]:
    return sorted(orthanc.rest(f"/instances/{i}/simplified-tags")["SOPInstanceUID"] for i in orthanc.instances())


def test_hand_switch_exposures_sigterm_restart_and_sighup(tmp_path: Path, sim: SimProcess, orthanc: Orthanc,
                                                          storescp: StoreSCP) -> None:
    (orthanc.worklist_dir / "kim.wl").write_bytes(worklist_file_bytes(make_worklist_entry(
        patient_name=PATIENT, patient_id="PID4711", birth_date="19800102", sex="F", accession=ACCESSION,
        study_uid="1.2.826.0.1.3680043.10.999.4711", requested_procedure_id="RP1", sps_id="SPS1",
        sps_description="Chest PA", station_ae="DXGATE", start=datetime.now(UTC))))
    config, state, api_port = tmp_path / "dxgate.toml", tmp_path / "state", free_port()
    write_config(config, state, sim, orthanc, api_port)
    for name, role in (("tina", "technologist"), ("eric", "engineer")):
        add_user(config, name, role)

    daemon = DaemonProcess(config, api_port, tmp_path).start()
    saved: list[str] = []
    try:
        with daemon.client() as eng:
            calibrate(eng, login(eng, "eric"), sim)
        pulses_before = sim.call("status")["pulses"]
        with daemon.client() as tech:
            csrf = login(tech, "tina")
            assert tech.post("/api/exam/expose", headers=csrf).status_code == 403  # software trigger: engineers
            refused = sim.call("status")["presses_refused"]
            assert not sim.call("press")["fired"]  # no exam armed: the hand switch gives no dose
            assert sim.call("status")["presses_refused"] == refused + 1
            open_exam_and_arm(tech, csrf)
            for n in range(3):
                saved.append(expose(sim, tech, n))
        until(lambda: archive_uids(orthanc) == sorted(saved), what="three images in Orthanc")
        for oid in orthanc.instances():
            tags = orthanc.rest(f"/instances/{oid}/simplified-tags")
            assert (tags["PatientName"], tags["AccessionNumber"]) == (PATIENT, ACCESSION)

        # SIGTERM just after the next images are saved: forwarding is under way
        with daemon.client() as tech:
            csrf = login(tech, "tina")
            for n in range(3, 6):
                saved.append(expose(sim, tech, n))
        daemon.signal(signal.SIGTERM)
        assert daemon.stop(timeout_s=45) == 0  # exits by itself within the service's stop bound
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
    assert sim.call("status")["pulses"] - pulses_before == len(saved)  # every dose, one saved image

    daemon = DaemonProcess(config, api_port, tmp_path).start()
    try:
        until(lambda: archive_uids(orthanc) == sorted(saved), what="every saved image in Orthanc after restart")
        # SIGHUP with a second archive: the next image goes there too
        write_config(config, state, sim, orthanc, api_port,
                     extra=(DestinationConfig(name="dcmtk", port=storescp.port, called_ae=storescp.aet),))
        daemon.signal(signal.SIGHUP)
        until(lambda: "reload applied" in daemon.journal(), what="the reload")
        with daemon.client() as tech:
            csrf = login(tech, "tina")
            open_exam_and_arm(tech, csrf)
            saved.append(expose(sim, tech, 0))
        until(lambda: archive_uids(orthanc) == sorted(saved), what="the image after the reload in Orthanc")
        [received] = until(storescp.files, what="the image after the reload at DCMTK")
        assert pydicom.dcmread(received).SOPInstanceUID == saved[-1]
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
    assert len(set(saved)) == len(saved) == 7
    assert sim.call("status")["pulses"] - pulses_before == len(saved)
    assert PATIENT not in daemon.journal() and "PID4711" not in daemon.journal()
