"""`dxgate qa --save-dicom`: the QA flats as DX For Processing images a physicist can measure elsewhere.

Checked with dciodvfy, and against the simulator: each image's mean signal, divided by the
calibration's sensitivity, is the air kerma the simulated room says it delivered for that flat.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from gateway.app import Gateway
from gateway.config import CalibrationConfig, Config, DestinationConfig, DetectorConfig, GeneratorConfig
from gateway.dicom import DX_FOR_PROCESSING
from hw_sim.room import SimRoom
from tests.peers import free_port


def test_qa_flats_saved_as_for_processing(tmp_path: Path, dciodvfy: Callable[[Path], None]) -> None:
    with SimRoom(seed=23) as room:
        config = Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode="8x8"),
                        generator=GeneratorConfig(port=room.start_generator()),
                        calibration=CalibrationConfig(dark_frames=4, flat_frames=3, qa_flat_frames=3,
                                                      qa_dose_factors=()),
                        destinations=(DestinationConfig(name="pacs", port=free_port(), called_ae="PACS"),))
        with Gateway(config, usb_backend=room.usb_backend()) as gw:
            cal = gw.calibrate()
            before = len(room.pulses)
            report = gw.calibration.qa(dicom_dir=tmp_path / "qa-dicom")
            kermas = [k for _, _, k in room.pulses[before:]]
    files = sorted((tmp_path / "qa-dicom").glob("*.dcm"), key=lambda p: pydicom.dcmread(p).InstanceNumber)
    assert report.passed and len(files) == len(kermas) == 3
    studies = set()
    for path, kerma in zip(files, kermas, strict=True):
        dciodvfy(path)
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == DX_FOR_PROCESSING and ds.PresentationIntentType == "FOR PROCESSING"
        assert ds.PatientID == "QA-SIM-0001" and str(ds.PatientName) == "QA^FLAT FIELD"
        assert (ds.Rows, ds.Columns) == (384, 384) and ds.SOPInstanceUID == path.stem
        studies.add(ds.StudyInstanceUID)
        px = ds.pixel_array.astype(np.float64)
        assert float(np.median(px)) / cal.counts_per_ugy == pytest.approx(kerma, rel=0.02)  # the dose delivered
        assert float(px.std() / px.mean()) < 0.05  # corrected: a flat field, not the raw gain pattern
    assert len(studies) == 1
