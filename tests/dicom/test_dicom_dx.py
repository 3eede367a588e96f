"""The DX For Presentation object: valid per dciodvfy, pixels untouched, worklist data copied."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.dicom import DX_FOR_PRESENTATION, DicomBuildError, new_uid, to_bytes
from tests.dicom_inputs import DETECTOR, EI, EXPOSURE, MODE, NOW, make_frame, make_item, make_typed_in_patient

NAMES = ["Müller^Jürgen", "Παπαδόπουλος^Νίκος", "山田^太郎", "Yamada^Tarou=山田^太郎=やまだ^たろう"]


def write(ds: Dataset, path: Path) -> Path:
    path.write_bytes(to_bytes(ds))
    return path


def reread(ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


@pytest.mark.peers
@pytest.mark.parametrize("name", NAMES)
def test_scheduled_image_passes_dciodvfy(build: Callable[..., Dataset], dciodvfy: Callable[[Path], None],
                                         tmp_path: Path, name: str) -> None:
    ds = build(make_item(patient_name=name))
    dciodvfy(write(ds, tmp_path / "scheduled.dcm"))
    assert str(reread(ds).PatientName) == name


@pytest.mark.peers
def test_unscheduled_image_passes_dciodvfy(build: Callable[..., Dataset], dciodvfy: Callable[[Path], None],
                                           tmp_path: Path) -> None:
    ds = build(None)
    dciodvfy(write(ds, tmp_path / "unscheduled.dcm"))
    back = reread(ds)
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
               "ReferringPhysicianName"):
        assert kw in back and back[kw].value in ("", None), kw
    assert "RequestAttributesSequence" not in back and "ReferencedStudySequence" not in back


@pytest.mark.peers
def test_a_patient_typed_in_at_the_console_names_no_request(build: Callable[..., Dataset],
                                                           dciodvfy: Callable[[Path], None], tmp_path: Path) -> None:
    ds = build(make_typed_in_patient(), study_uid=new_uid("2.25"))
    dciodvfy(write(ds, tmp_path / "typed-in.dcm"))  # empty Type 1C request IDs would be errors
    back = reread(ds)
    assert str(back.PatientName) == "Müller^Jürgen" and back.PatientID == "PAT-0815"
    assert "RequestAttributesSequence" not in back


@pytest.mark.peers
@pytest.mark.parametrize("part, laterality, view", [("HAND", "L", "PA"), ("KNEE", "R", "LL"), ("ABDOMEN", None, "AP"),
                                                    ("LSPINE", None, "LL"), ("CHEST", None, "")])
def test_other_anatomy_and_views_pass_dciodvfy(build: Callable[..., Dataset], dciodvfy: Callable[[Path], None],
                                               tmp_path: Path, part: str, laterality: str | None, view: str) -> None:
    ds = build(make_item(), body_part=part, laterality=laterality, view_position=view)
    dciodvfy(write(ds, tmp_path / "x.dcm"))
    assert ds.BodyPartExamined == part
    assert ds.ImageLaterality == (laterality or "U")


@pytest.mark.peers
def test_mpps_reference_and_pps_attributes_pass_dciodvfy(build: Callable[..., Dataset],
                                                        dciodvfy: Callable[[Path], None], tmp_path: Path) -> None:
    mpps = new_uid("2.25")
    ds = build(make_item(), pps_id="PPS-1", pps_start=NOW.replace(minute=20), mpps_sop_instance_uid=mpps)
    dciodvfy(write(ds, tmp_path / "mpps.dcm"))
    ref = ds.ReferencedPerformedProcedureStepSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == ("1.2.840.10008.3.1.2.3.3", mpps)
    assert ds.PerformedProcedureStepID == "PPS-1"
    assert ds.PerformedProcedureStepStartTime.startswith("1020") and ds.StudyTime.startswith("1020")


def test_pixel_data_round_trip_exactly(build: Callable[..., Dataset]) -> None:
    frame = make_frame()
    back = reread(build(make_item(), frame=frame))
    assert back.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    arr = back.pixel_array
    assert arr.dtype == np.uint16 and arr.shape == frame.pixels.shape
    np.testing.assert_array_equal(arr, frame.pixels)
    assert back.PixelData == frame.pixels.astype("<u2").tobytes()
    assert (back.BitsAllocated, back.BitsStored, back.HighBit, back.PixelRepresentation) == (16, 14, 13, 0)
    assert back.PhotometricInterpretation == "MONOCHROME1" and back.PresentationLUTShape == "INVERSE"


def test_worklist_data_are_copied_per_annex_j(build: Callable[..., Dataset]) -> None:
    item = make_item()
    back = reread(build(item))
    assert back.SOPClassUID == DX_FOR_PRESENTATION and back.Modality == "DX"
    assert back.PresentationIntentType == "FOR PRESENTATION"
    assert back.StudyInstanceUID == item.study_instance_uid
    assert back.AccessionNumber == item.accession_number
    assert back.PatientID == item.patient_id and back.IssuerOfPatientID == item.issuer_of_patient_id
    assert back.PatientBirthDate == "19551103" and back.PatientSex == "M"
    assert str(back.ReferringPhysicianName) == item.referring_physician
    assert back.StudyID == item.requested_procedure_id
    assert back.ReferencedStudySequence[0].ReferencedSOPInstanceUID == item.referenced_study_sop_instance_uid
    req = back.RequestAttributesSequence[0]
    assert req.RequestedProcedureID == item.requested_procedure_id
    assert req.ScheduledProcedureStepID == item.sps_id
    assert req.ScheduledProcedureStepDescription == item.sps_description
    assert req.AccessionNumber == item.accession_number and req.StudyInstanceUID == item.study_instance_uid
    code = req.ScheduledProtocolCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("36554-4", "LN", "XR Chest PA")
    assert back.PerformedProcedureStepDescription == item.sps_description
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert str(back.InstitutionName) == "Klinikum Süd"


def test_equipment_detector_dose_and_exposure_index(build: Callable[..., Dataset]) -> None:
    frame = make_frame()
    back = reread(build(make_item(), frame=frame))
    assert back.Manufacturer == "dxgate" and back.StationName == "DXROOM1"
    assert back.ManufacturerModelName == "Raum 3 Bucky" and back.InstitutionalDepartmentName == "Radiologie"
    assert back.DeviceSerialNumber == "SYS-4711" and back.DetectorID == DETECTOR.serial  # the system's, the panel's
    assert any(v.startswith("dxgate ") for v in back.SoftwareVersions)
    assert back.DetectorType == "SCINTILLATOR" and float(back.DetectorTemperature) == 31.5
    assert [float(v) for v in back.ImagerPixelSpacing] == list(MODE.pixel_spacing_mm)
    assert back.DateOfLastDetectorCalibration == frame.calibrated_at.strftime("%Y%m%d")
    assert back.TimeOfLastDetectorCalibration.startswith(frame.calibrated_at.strftime("%H%M%S"))
    act = EXPOSURE.actual
    assert float(back.KVP) == pytest.approx(act.kvp)
    assert back.Exposure == 2 and back.ExposureInuAs == 2040
    assert back.ExposureTime == round(act.exposure_time_ms)
    assert float(back.ExposureTimeInuS) == pytest.approx(12500.0)
    assert float(back.ImageAndFluoroscopyAreaDoseProduct) == pytest.approx(act.dap_dgy_cm2)
    assert float(back.ExposureIndex) == EI.ei and float(back.TargetExposureIndex) == EI.target_ei
    assert float(back.DeviationIndex) == pytest.approx(EI.deviation_index)
    assert frame.calibration_id in back.DerivationDescription
    assert back.AcquisitionDeviceProcessingDescription == "offset, gain, defects"
    assert back.AcquisitionContextSequence == []
    assert back.LossyImageCompression == "00" and back.BurnedInAnnotation == "NO"


def test_default_window_ignores_the_collimator_edge(build: Callable[..., Dataset]) -> None:
    frame = make_frame()
    ds = build(make_item(), frame=frame)
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    lo, hi = centre - width / 2, centre + width / 2
    assert 200 <= lo < 1000 and 11000 < hi <= 12100  # the 16383 edge columns are outside the window


def test_unscheduled_study_uid_is_the_callers(build: Callable[..., Dataset]) -> None:
    uid = new_uid("1.2.826.0.1.3680043.10.543")
    assert build(None, study_uid=uid).StudyInstanceUID == uid


def test_refuses_a_study_uid_other_than_the_worklists(build: Callable[..., Dataset]) -> None:
    with pytest.raises(DicomBuildError, match="worklist's Study Instance UID"):
        build(make_item(), study_uid=new_uid("2.25"))


@pytest.mark.parametrize("field, bad", [("sop_instance_uid", "1.2.03"), ("series_uid", "abc"), ("study_uid", "")])
def test_refuses_invalid_uids(build: Callable[..., Dataset], field: str, bad: str) -> None:
    with pytest.raises(DicomBuildError, match="not a valid DICOM UID"):
        build(None, **{field: bad})


def test_refuses_pixels_beyond_bits_stored(build: Callable[..., Dataset]) -> None:
    px = np.full((8, 8), 20000, dtype=np.uint16)
    with pytest.raises(DicomBuildError, match="bits_stored"):
        build(None, frame=make_frame(px))


@pytest.mark.parametrize("kw, msg", [(dict(body_part="HAND"), "paired"), (dict(body_part="TAIL"), "not known"),
                                     (dict(body_part="CHEST", laterality="L"), "unpaired"),
                                     (dict(view_position="XYZ"), "view position"),
                                     (dict(detector_type="INDIRECT"), "detector type"),
                                     (dict(pixel_spacing_mm=(0.0, 0.1)), "pixel spacing")])
def test_refuses_what_cannot_be_coded(build: Callable[..., Dataset], kw: dict[str, object], msg: str) -> None:
    with pytest.raises(DicomBuildError, match=msg):
        build(None, **kw)


def test_long_processing_history_is_clipped_not_refused(build: Callable[..., Dataset]) -> None:
    history = tuple(f"step-{i}-with-a-long-name" for i in range(20))
    ds = build(None, frame=make_frame(history=history))
    assert len(ds.AcquisitionDeviceProcessingDescription) == 64
    assert ds.AcquisitionDeviceProcessingDescription.endswith("...")
    assert "step-19-with-a-long-name" in ds.DerivationDescription


def test_patient_orientation_follows_the_view_unless_given(build: Callable[..., Dataset]) -> None:
    assert list(build(None, view_position="PA").PatientOrientation) == ["L", "F"]
    assert list(build(None, view_position="LL").PatientOrientation) == ["P", "F"]
    assert list(build(None, view_position="AP", patient_orientation=("R", "F")).PatientOrientation) == ["R", "F"]
    with pytest.raises(DicomBuildError, match="patient orientation"):
        build(None, patient_orientation=("X", "F"))


def test_times_are_written_in_the_local_zone_with_its_offset(build: Callable[..., Dataset],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Viewers show StudyTime as written: a UTC time would read hours off in the hospital."""
    monkeypatch.setenv("TZ", "EST5")  # UTC-5, POSIX form: no zoneinfo needed
    time.tzset()
    try:
        ds = build(make_item())
    finally:
        monkeypatch.undo()
        time.tzset()
    started = EXPOSURE.started_at  # 10:30:03 UTC
    assert ds.TimezoneOffsetFromUTC == "-0500"
    assert ds.AcquisitionTime.startswith((started - timedelta(hours=5)).strftime("%H%M%S"))
    assert ds.AcquisitionDateTime.endswith("-0500") and ds.ContentTime.startswith("0530")
    assert ds.StudyDate == "20261122"


def test_procedure_codes_referenced_study_class_operator_and_procedure_step(build: Callable[..., Dataset]) -> None:
    """PS3.17 Annex J: the Requested Procedure Code goes to Procedure Code Sequence and to the
    Request Attributes; the Referenced Study keeps the SOP class the RIS gave; who exposed and
    which performed step the image belongs to are written."""
    item = make_item()
    start = datetime(2026, 11, 22, 10, 5, 1, tzinfo=UTC)
    back = reread(build(item, operator="tina", pps_id="P26112210050100", pps_start=start))
    [code] = back.ProcedureCodeSequence
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == \
        ("RPID-THX2", "99KLINIKUM", "Thorax in zwei Ebenen")
    [req] = back.RequestAttributesSequence
    assert req.RequestedProcedureCodeSequence[0].CodeValue == "RPID-THX2"
    [ref] = back.ReferencedStudySequence
    assert ref.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.2"
    assert ref.ReferencedSOPInstanceUID == item.referenced_study_sop_instance_uid
    assert str(back.OperatorsName) == "tina"
    assert back.PerformedProcedureStepID == "P26112210050100"
    local = start.astimezone()
    assert (back.PerformedProcedureStepStartDate, back.PerformedProcedureStepStartTime[:6]) == \
        (local.strftime("%Y%m%d"), local.strftime("%H%M%S"))
    assert back.StudyDate == local.strftime("%Y%m%d")  # the study is dated by its procedure step
    without = reread(build(make_item(procedure_codes=(), referenced_study_sop_class_uid="")))
    assert "ProcedureCodeSequence" not in without and "OperatorsName" not in without
    assert without.ReferencedStudySequence[0].ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.1"  # SWF's default


@pytest.mark.peers
def test_processed_presentation_and_for_processing_pass_dciodvfy(
        build: Callable[..., Dataset], dciodvfy: Callable[[Path], None], tmp_path: Path) -> None:
    """For Presentation with processed (log, 12-bit) pixels; For Processing with the linear frame."""
    from gateway.presentation import present

    frame = make_frame()
    shown = present(frame.pixels, pixel_spacing_mm=MODE.pixel_spacing_mm)
    presented = build(make_item(), frame=frame, presentation=shown)
    dciodvfy(write(presented, tmp_path / "presented.dcm"))
    back = reread(presented)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1" and back.PresentationIntentType == "FOR PRESENTATION"
    assert back.PixelIntensityRelationship == "LOG" and back.BitsStored == 12
    assert np.array_equal(back.pixel_array, shown.pixels)
    assert "equalisation" in back.DerivationDescription
    raw = build(make_item(), frame=frame, for_processing=True)
    dciodvfy(write(raw, tmp_path / "processing.dcm"))
    back = reread(raw)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1.1" and back.PresentationIntentType == "FOR PROCESSING"
    assert back.PixelIntensityRelationship == "LIN" and np.array_equal(back.pixel_array, frame.pixels)
    with pytest.raises(Exception, match="never presentation processing"):
        build(make_item(), frame=frame, for_processing=True, presentation=shown)
