"""The whole path with the real driver, the simulator behind its seams, and real peers.

A simulated exposure goes USB panel -> pyusb driver -> correction -> DICOM DX -> spool ->
C-STORE, with Orthanc as RIS (worklist plugin) and PACS, and with DCMTK storescp as PACS.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from gateway.app import Gateway
from gateway.config import (
    CalibrationConfig,
    Config,
    DestinationConfig,
    DetectorConfig,
    GeneratorConfig,
    ReviewConfig,
    WorklistConfig,
)
from gateway.errors import FrameError
from gateway.peers import make_worklist_entry, worklist_file_bytes
from hw_sim.room import SimRoom
from tests.peers import Orthanc, StoreSCP

MODE = "4x4"


@pytest.fixture
def room() -> Iterator[SimRoom]:
    sim = SimRoom(seed=11)
    try:
        yield sim
    finally:
        sim.close()


def make_config(tmp_path: Path, room: SimRoom, *, worklist_port: int, worklist_ae: str,
                dest: DestinationConfig) -> Config:
    return Config(
        state_dir=str(tmp_path / "state"),
        detector=DetectorConfig(mode=MODE),
        generator=GeneratorConfig(port=room.start_generator()),
        calibration=CalibrationConfig(dark_frames=4, flat_frames=4),
        worklist=WorklistConfig(host="127.0.0.1", port=worklist_port, called_ae=worklist_ae),
        review=ReviewConfig(hold_s=0),  # no verdict is given here: each image goes at once
        destinations=(dest,),
    )


def write_wl(directory: Path, name: str, **fields: object) -> pydicom.Dataset:
    ds = make_worklist_entry(start=datetime.now(UTC), station_ae="DXGATE", **fields)  # type: ignore[arg-type]
    (directory / f"{name}.wl").write_bytes(worklist_file_bytes(ds))
    return ds


def roi_means(img: np.ndarray, size: int = 64) -> np.ndarray:
    """Means of size x size regions of interest (TG-150 style, scaled to the test's small frames)."""
    rows, cols = (img.shape[0] // size) * size, (img.shape[1] // size) * size
    return img[:rows, :cols].astype(np.float64).reshape(rows // size, size, cols // size, size).mean(axis=(1, 3))


def check_against_truth(pixels: np.ndarray, room: SimRoom, kerma_ugy: float, scene: str) -> None:
    """The archived image against the simulator's ground truth, never against dxgate's own output:
    offset gone (signal = counts/uGy x kerma x transmission), gain flattened, defects repaired."""
    model = room.model(MODE)
    truth = model.truth
    expected = model.counts_per_ugy * kerma_ugy * (model.transmission(scene) if scene != "open" else 1.0)
    expected = np.broadcast_to(np.asarray(expected, np.float64), pixels.shape)
    good = ~truth.defective
    ratio = roi_means(np.where(good, pixels, 0)) / roi_means(np.where(good, expected, 0))
    # offset removed and gain flattened: every region reads what the dose and the scene put there
    assert np.median(ratio) == pytest.approx(1.0, abs=0.02), np.median(ratio)
    assert np.abs(ratio - 1.0).max() < 0.04, np.abs(ratio - 1.0).max()
    # the defective pixels the simulator made are repaired from their neighbours, not left as they read
    local = cv2.blur(pixels.astype(np.float32), (5, 5))
    for name in ("dead", "hot", "over", "under"):
        where = getattr(truth, name)
        assert where.any(), name
        rel = np.abs(pixels[where] - local[where]) / np.maximum(local[where], 1)
        assert np.median(rel) < 0.1, (name, float(np.median(rel)))


def calibrated_gateway(config: Config, room: SimRoom) -> Gateway:
    gw = Gateway(config, usb_backend=room.usb_backend())
    room.place("open")
    gw.calibrate(operator="test")
    room.place("chest")
    return gw


def test_exposure_reaches_orthanc_with_worklist_identity_and_exact_pixels(
        tmp_path: Path, room: SimRoom, orthanc: Orthanc, dciodvfy: Callable[[Path], None]) -> None:
    study_uid = "1.2.826.0.1.3680043.10.999.1.42"
    write_wl(orthanc.worklist_dir, "chest", patient_name="Παπαδόπουλος^Νίκος", patient_id="PID-77",
             birth_date="19550101", sex="M", accession="ACC-2026-1", study_uid=study_uid,
             requested_procedure_id="RP1", sps_id="SPS1", sps_description="Chest PA")
    dest = DestinationConfig(name="orthanc", port=orthanc.dicom_port, called_ae=orthanc.aet, for_processing=True)
    config = make_config(tmp_path, room, worklist_port=orthanc.dicom_port, worklist_ae=orthanc.aet, dest=dest)
    with calibrated_gateway(config, room) as gw:
        items = gw.worklist().items
        assert [(i.patient_id, i.accession_number) for i in items] == [("PID-77", "ACC-2026-1")]
        assert items[0].patient_name == "Παπαδόπουλος^Νίκος"
        image = gw.expose(gw.open_exam(items[0]))
        dciodvfy(Path(image.instance.path))
        [processing] = [d for d in gw.spool.listing() if d.sop_instance_uid != image.instance.sop_instance_uid]
        dciodvfy(processing.path)
        results = gw.forward_due()
        assert sorted((r.destination, r.outcome) for r in results) == [("orthanc", "sent")] * 2
        assert [d.state for d in gw.spool.deliveries(image.instance.sop_instance_uid)] == ["sent"]
        corrected = np.array(image.frame.pixels)

    orthanc_id = orthanc.find_instance(image.instance.sop_instance_uid)
    assert orthanc_id is not None
    tags = orthanc.rest(f"/instances/{orthanc_id}/simplified-tags")
    assert tags["PatientID"] == "PID-77"
    assert tags["AccessionNumber"] == "ACC-2026-1"
    assert tags["StudyInstanceUID"] == study_uid
    assert tags["PatientName"] == "Παπαδόπουλος^Νίκος"
    assert tags["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.1.1"
    shown = pydicom.dcmread(io.BytesIO(orthanc.instance_file(orthanc_id)))
    assert shown.PixelIntensityRelationship == "LOG" and shown.BitsStored == 12  # presentation processed
    raw_id = orthanc.find_instance(processing.sop_instance_uid)
    assert raw_id is not None
    stored = pydicom.dcmread(io.BytesIO(orthanc.instance_file(raw_id)))
    assert stored.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1.1"  # DX For Processing: the same acquisition
    assert (stored.StudyInstanceUID, stored.SeriesInstanceUID, stored.AcquisitionDateTime) == \
        (shown.StudyInstanceUID, shown.SeriesInstanceUID, shown.AcquisitionDateTime)
    assert np.array_equal(stored.pixel_array, corrected)  # bit-exact through the archive
    # and what the archive holds is the chest the simulator exposed, corrected
    check_against_truth(stored.pixel_array, room, room.pulses[-1][2], "chest")


def test_exposure_reaches_dcmtk_storescp(tmp_path: Path, room: SimRoom, storescp: StoreSCP,
                                         orthanc: Orthanc, dciodvfy: Callable[[Path], None]) -> None:
    write_wl(orthanc.worklist_dir, "hand", patient_name="Doe^Jane", patient_id="PID-1", birth_date="19800101",
             sex="F", accession="ACC-7", study_uid="1.2.826.0.1.3680043.10.999.1.7",
             requested_procedure_id="RP7", sps_id="SPS7", sps_description="Hand")
    dest = DestinationConfig(name="dcmtk", port=storescp.port, called_ae=storescp.aet, for_processing=True)
    config = make_config(tmp_path, room, worklist_port=orthanc.dicom_port, worklist_ae=orthanc.aet, dest=dest)
    with calibrated_gateway(config, room) as gw:
        exam = gw.open_exam(gw.worklist().items[0])
        room.place("open")  # an open field: uniformity is the measure of the correction
        images = [gw.expose(exam) for _ in range(2)]
        kermas = [k for _, _, k in room.pulses[-2:]]
        results = gw.forward_due()
        assert sorted(r.outcome for r in results) == ["sent"] * 4  # For Presentation and For Processing
    received = {pydicom.dcmread(p).SOPInstanceUID: p for p in storescp.files()}
    assert {i.instance.sop_instance_uid for i in images} < set(received)
    linear = {pydicom.dcmread(p).AcquisitionDateTime: p for p in received.values()
              if pydicom.dcmread(p).SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1.1"}
    assert len(linear) == 2
    for img, kerma in zip(images, kermas, strict=True):
        dciodvfy(received[img.instance.sop_instance_uid])
        ds = pydicom.dcmread(linear[pydicom.dcmread(received[img.instance.sop_instance_uid]).AcquisitionDateTime])
        assert ds.AccessionNumber == "ACC-7" and ds.StudyInstanceUID == exam.study_uid
        assert np.array_equal(ds.pixel_array, img.frame.pixels)
        check_against_truth(ds.pixel_array, room, kerma, "open")
        # global non-uniformity of the corrected flat (ROI means, max-min over mean): the raw
        # frame of the same panel is ~20 % (heel effect, radial fall-off); corrected it is < 2 %
        means = roi_means(np.where(room.model(MODE).truth.defective, np.median(ds.pixel_array), ds.pixel_array))
        assert (means.max() - means.min()) / means.mean() < 0.02
        dciodvfy(linear[ds.AcquisitionDateTime])


def test_corrupt_frame_never_becomes_an_image(tmp_path: Path, room: SimRoom, storescp: StoreSCP,
                                              orthanc: Orthanc) -> None:
    dest = DestinationConfig(name="dcmtk", port=storescp.port, called_ae=storescp.aet)
    config = make_config(tmp_path, room, worklist_port=orthanc.dicom_port, worklist_ae=orthanc.aet, dest=dest)
    with calibrated_gateway(config, room) as gw:
        exam = gw.open_exam(None)
        room.inject_crc_errors(10)  # more than the driver's read attempts: every re-read is corrupt
        with pytest.raises(FrameError, match="CRC"):
            gw.expose(exam)
        assert sum(gw.spool.counts().values()) == 0
        assert list(Path(config.path(config.spool.directory)).rglob("*.dcm")) == []
        assert gw.forward_due() == []
        # one transient corruption is re-read from the panel's held frame and becomes an image
        room.inject_crc_errors(1)
        image = gw.expose(exam)
        assert [r.outcome for r in gw.forward_due()] == ["sent"]
    assert [pydicom.dcmread(p).SOPInstanceUID for p in storescp.files()] == [image.instance.sop_instance_uid]
