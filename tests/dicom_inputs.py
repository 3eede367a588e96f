"""Inputs for the DX builder made directly (no detector, no correction run), and a builder with
defaults: the one way tests and benchmarks make DICOM objects, so every object they write is valid."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from gateway.config import SiteConfig
from gateway.dicom import build_dx, new_uid
from gateway.types import (
    CorrectedFrame,
    DetectorInfo,
    Exposure,
    ExposureIndex,
    ExposureReadback,
    FrameKind,
    FrameMeta,
    ProtocolCode,
    ReadoutMode,
    Technique,
    WorklistItem,
)

NOW = datetime(2026, 11, 22, 10, 30, 5, 123456, tzinfo=UTC)
ROWS, COLS = 96, 80
MODE = ReadoutMode(mode_id=3, name="8x8", rows=ROWS, columns=COLS, pixel_spacing_mm=(1.104, 1.104), bits_stored=14)
DETECTOR = DetectorInfo(vendor="SimPanel Inc.", model="SP-4343", serial="SIM-0001", firmware="2.1.0", modes=(MODE,))


def make_frame(pixels: np.ndarray | None = None,
               history: tuple[str, ...] = ("offset", "gain", "defects")) -> CorrectedFrame:
    if pixels is None:
        rng = np.random.default_rng(7)
        pixels = rng.integers(200, 12000, size=(ROWS, COLS), dtype=np.uint16)
        pixels[:, :5] = 16383  # a collimator edge of unattenuated beam
    meta = FrameMeta(frame_number=42, detector_serial=DETECTOR.serial, mode=MODE.name, rows=pixels.shape[0],
                     columns=pixels.shape[1], bits_stored=MODE.bits_stored, kind=FrameKind.EXPOSED,
                     temperature_c=31.5, acquired_at=NOW, crc32=0x1234ABCD)
    return CorrectedFrame(pixels=pixels, meta=meta, calibration_id="cal-SIM-0001-8x8-0007",
                          calibrated_at=NOW - timedelta(days=3, hours=2), counts_per_ugy=95.0, history=history)


EXPOSURE = Exposure(requested=Technique(kvp=80.0, mas=2.0),
                    actual=ExposureReadback(kvp=80.3, mas=2.04, exposure_time_ms=12.5, dap_dgy_cm2=0.0321),
                    started_at=NOW - timedelta(seconds=2))
EI = ExposureIndex(ei=412.0, target_ei=400.0, deviation_index=0.13)


def make_item(patient_name: str = "Müller^Jürgen", **kw: Any) -> WorklistItem:
    values: dict[str, Any] = dict(
        patient_name=patient_name, patient_id="PAT-0815", patient_birth_date=date(1955, 11, 3), patient_sex="M",
        accession_number="ACC20261122", study_instance_uid=new_uid("2.25"), requested_procedure_id="RP-77",
        requested_procedure_description="XR Thorax 2 Ebenen", sps_id="SPS-77-1", sps_description="Thorax p.a.",
        sps_start=datetime(2026, 11, 22, 10, 0), modality="DX", scheduled_station_ae="DXGATE",
        referring_physician="Schmidt^Anna^^Dr.", issuer_of_patient_id="KLINIKUM",
        protocol_codes=(ProtocolCode("36554-4", "LN", "XR Chest PA"),),
        procedure_codes=(ProtocolCode("RPID-THX2", "99KLINIKUM", "Thorax in zwei Ebenen"),),
        referenced_study_sop_instance_uid=new_uid("2.25"),
        referenced_study_sop_class_uid="1.2.840.10008.3.1.2.3.2")
    values.update(kw)
    return WorklistItem(**values)


def make_typed_in_patient() -> WorklistItem:
    """An unscheduled patient entered at the console (emergency): patient data, no order."""
    return make_item(accession_number="", study_instance_uid="", requested_procedure_id="",
                     requested_procedure_description="", sps_id="", sps_description="", sps_start=None,
                     scheduled_station_ae="", referring_physician="", protocol_codes=(), procedure_codes=(),
                     referenced_study_sop_instance_uid="", referenced_study_sop_class_uid="")


def build_test_dx(item: WorklistItem | None = None, frame: CorrectedFrame | None = None, **kw: Any) -> Dataset:
    """A DX For Presentation dataset from dxgate's own builder, with test defaults."""
    args: dict[str, Any] = dict(
        site=SiteConfig(station_name="DXROOM1", institution_name="Klinikum Süd", manufacturer="dxgate",
                        model_name="Raum 3 Bucky", device_serial="SYS-4711", department_name="Radiologie"),
        detector=DETECTOR, pixel_spacing_mm=MODE.pixel_spacing_mm,
        study_uid=item.study_instance_uid if item else new_uid("2.25"), series_uid=new_uid("2.25"),
        sop_instance_uid=new_uid("2.25"), series_number=1, instance_number=1, body_part="CHEST",
        view_position="PA", now=NOW)
    args.update(kw)
    return build_dx(frame or make_frame(), EXPOSURE, item, EI, **args)
