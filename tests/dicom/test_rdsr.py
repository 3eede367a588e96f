"""The X-Ray Radiation Dose SR builder: a valid object (dciodvfy, both builds, and DCMTK's SR
reader, which checks the IOD's content relationships), one TID 10003 event per exposure with the
generator's values in the template's units, nothing it did not confirm, and the images' patient,
study and equipment."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.config import SiteConfig
from gateway.dicom import XRAY_RADIATION_DOSE_SR, DicomBuildError, IrradiationEvent, build_rdsr, new_uid, to_bytes
from gateway.types import Exposure, ExposureReadback, Technique, WorklistItem
from tests.dicom_inputs import DETECTOR, EXPOSURE, NOW, build_test_dx, make_item, make_typed_in_patient
from tests.peers import require

SITE = SiteConfig(station_name="DXROOM1", institution_name="Klinikum Süd", manufacturer="dxgate",
                  model_name="Raum 3 Bucky", device_serial="SYS-4711", department_name="Radiologie")
KNEE = Exposure(requested=Technique(kvp=60.0, mas=4.0),
                actual=ExposureReadback(kvp=60.2, mas=3.96, exposure_time_ms=20.0, dap_dgy_cm2=0.415,
                                        tube_current_ma=199.0),
                started_at=NOW - timedelta(seconds=1))


def events() -> list[IrradiationEvent]:
    return [IrradiationEvent(new_uid("2.25"), EXPOSURE, "CHEST", "PA", protocol="Thorax p.a."),
            IrradiationEvent(new_uid("2.25"), KNEE, "KNEE", "LL", "L", rejected_reason="motion")]


def build(evs: list[IrradiationEvent] | None = None, item: WorklistItem | None = None, **kw: object) -> Dataset:
    args: dict[str, object] = dict(site=SITE, detector=DETECTOR, study_uid=item and item.study_instance_uid or
                                   new_uid("2.25"), series_uid=new_uid("2.25"), sop_instance_uid=new_uid("2.25"),
                                   now=NOW, started=NOW - timedelta(seconds=5))
    args.update(kw)
    return build_rdsr(events() if evs is None else evs, item, **args)  # type: ignore[arg-type]


def children(node: Dataset, code: str) -> list[Dataset]:
    return [c for c in node.get("ContentSequence", []) if c.ConceptNameCodeSequence[0].CodeValue == code]


def num(node: Dataset, code: str) -> tuple[float, str]:
    [item] = children(node, code)
    mv = item.MeasuredValueSequence[0]
    return float(mv.NumericValue), str(mv.MeasurementUnitsCodeSequence[0].CodeValue)


def event_nodes(ds: Dataset) -> list[Dataset]:
    return children(ds, "113706")


def dsrdump_errors(path: Path) -> list[str]:
    """DCMTK's SR reader: content item values and the IOD's relationship constraints."""
    out = subprocess.run([require("/usr/bin/dsrdump"), str(path)], capture_output=True, text=True, timeout=60)
    lines = (out.stdout + out.stderr).splitlines()
    return [line for line in lines if line.startswith(("E:", "F:"))] + (
        [f"exit code {out.returncode}"] if out.returncode else [])


@pytest.mark.parametrize("scheduled", [True, False, None], ids=["scheduled", "unscheduled", "typed-in"])
def test_the_dose_report_passes_dciodvfy_and_dcmtks_sr_reader(
        tmp_path: Path, dciodvfy: Callable[[Path | str], None], scheduled: bool | None) -> None:
    incomplete = replace(EXPOSURE, actual=ExposureReadback(kvp=None, mas=2.0, exposure_time_ms=None,
                                                           dap_dgy_cm2=None), problems=("kV missing",))
    evs = [*events(), IrradiationEvent(new_uid("2.25"), incomplete, "HAND", "PA", "R")]
    item = make_item() if scheduled else None if scheduled is False else make_typed_in_patient()
    ds = build(evs, item, images=[(new_uid("2.25"), "1.2.840.10008.5.1.4.1.1.1.1", new_uid("2.25"))],
               mpps_sop_instance_uid=new_uid("2.25"), operator="Meier^Tina")
    path = tmp_path / "rdsr.dcm"
    path.write_bytes(to_bytes(ds))
    dciodvfy(path)
    assert dsrdump_errors(path) == []
    back = pydicom.dcmread(path)
    assert back.SOPClassUID == XRAY_RADIATION_DOSE_SR == "1.2.840.10008.5.1.4.1.1.88.67"
    assert back.SpecificCharacterSet == "ISO_IR 192" and back.Modality == "SR"
    assert (back.CompletionFlag, back.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    assert back.ContentTemplateSequence[0].TemplateIdentifier == "10001"
    assert "OperatorsName" not in back  # not in the SR IOD: the operator is each event's participant
    assert ("ReferencedRequestSequence" in back) == bool(scheduled)  # a typed-in patient was not requested
    for event in event_nodes(back):
        [person] = children(event, "113870")  # TID 1020 Person Participant
        [role] = children(person, "113875")
        assert (str(person.PersonName), role.ConceptCodeSequence[0].CodeValue) == ("Meier^Tina", "113851")


def test_one_event_per_exposure_with_the_generators_values_in_the_templates_units() -> None:
    evs = events()
    ds = build(evs)
    nodes = event_nodes(ds)
    assert len(nodes) == len(evs) == 2  # the rejected knee included
    assert [children(n, "113769")[0].UID for n in nodes] == [e.event_uid for e in evs]
    for node, exp in zip(nodes, (EXPOSURE, KNEE), strict=True):
        act = exp.actual
        assert act is not None and act.kvp is not None and act.mas is not None and act.dap_dgy_cm2 is not None
        assert num(node, "113733") == (pytest.approx(act.kvp), "kV")
        assert num(node, "113736") == (pytest.approx(act.mas * 1000.0), "uA.s")  # µAs
        assert num(node, "113824") == (pytest.approx(act.exposure_time_ms), "ms")
        # 1 dGy·cm² = 0.1 Gy x 1e-4 m² = 1e-5 Gy·m²
        assert num(node, "122130") == (pytest.approx(act.dap_dgy_cm2 * 1e-5, rel=1e-9), "Gy.m2")
        plane = children(node, "113764")[0].ConceptCodeSequence[0]
        assert (plane.CodeValue, plane.CodingSchemeDesignator) == ("113622", "DCM")  # Single Plane
        kind = children(node, "113721")[0].ConceptCodeSequence[0]
        assert kind.CodeValue == "113611"  # Stationary Acquisition
    assert num(nodes[0], "113734") == (pytest.approx(2.04 / 0.0125), "mA")  # from confirmed mAs and time
    assert num(nodes[1], "113734") == (pytest.approx(199.0), "mA")  # the generator's measured current
    [acc] = children(ds, "113702")
    assert num(acc, "113722") == (pytest.approx((0.0321 + 0.415) * 1e-5, rel=1e-9), "Gy.m2")
    assert num(acc, "113731") == (2.0, "{frames}")


def test_the_target_region_is_the_body_parts_snomed_code_with_its_laterality() -> None:
    chest, knee = event_nodes(build())
    region = children(knee, "123014")[0]
    assert (region.ConceptCodeSequence[0].CodeValue, region.ConceptCodeSequence[0].CodingSchemeDesignator) == (
        "72696002", "SCT")  # Knee
    assert children(region, "272741003")[0].ConceptCodeSequence[0].CodeValue == "7771000"  # Left
    assert children(chest, "123014")[0].ConceptCodeSequence[0].CodeValue == "816094009"  # Chest
    assert children(chest, "125203")[0].TextValue == "Thorax p.a."


def test_a_rejected_exposure_keeps_its_event_and_says_so() -> None:
    chest, knee = event_nodes(build())
    assert children(chest, "121106") == []
    assert children(knee, "121106")[0].TextValue == "Image rejected by the technologist: motion"


def test_values_the_generator_did_not_confirm_are_left_out_never_guessed() -> None:
    lost = replace(KNEE, actual=ExposureReadback(kvp=None, mas=3.96, exposure_time_ms=None, dap_dgy_cm2=None),
                   problems=("kV and DAP missing from the readback",))
    ds = build([events()[0], IrradiationEvent(new_uid("2.25"), lost, "KNEE", "LL", "L")])
    node = event_nodes(ds)[1]
    for code in ("113733", "122130", "113824", "113734"):  # kV, DAP, time, current (needs the time)
        assert children(node, code) == [], code
    assert num(node, "113736") == (pytest.approx(3960.0), "uA.s")
    assert "kV and DAP missing" in children(node, "121106")[0].TextValue
    [total] = children(children(ds, "113702")[0], "113722")  # mandatory: present, value unknown
    assert len(total.MeasuredValueSequence) == 0
    assert total.NumericValueQualifierCodeSequence[0].CodeValue == "114010"


def test_patient_study_and_equipment_are_the_images() -> None:
    item = make_item()
    step_start = NOW - timedelta(seconds=5)  # the procedure step's first exposure dates both, not `now`
    image = build_test_dx(item, pps_start=step_start)
    ds = build(item=item, started=step_start)
    for kw in ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
               "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName", "StudyDescription",
               "ProcedureCodeSequence", "ReferencedStudySequence", "Manufacturer", "ManufacturerModelName",
               "DeviceSerialNumber", "StationName", "InstitutionName", "SoftwareVersions"):
        assert ds[kw].value == image[kw].value, kw
    [req] = ds.ReferencedRequestSequence
    assert (req.StudyInstanceUID, req.AccessionNumber, req.RequestedProcedureID) == (
        item.study_instance_uid, item.accession_number, item.requested_procedure_id)
    assert ds.PerformedProcedureCodeSequence[0].CodeValue == item.procedure_codes[0].value
    observer = {c.ConceptNameCodeSequence[0].CodeValue: c for c in ds.ContentSequence}
    assert observer["121016"].TextValue == "SYS-4711" and observer["121013"].TextValue == "DXROOM1"
    assert observer["121012"].UID == build(item=item).ContentSequence[3].UID  # the same device UID every time


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(DicomBuildError, match="at least one"):
        build([])
    with pytest.raises(DicomBuildError, match="irradiation event UID"):
        build([replace(events()[0], event_uid="1.02.3")])
    with pytest.raises(DicomBuildError, match="differs from the worklist"):
        build(item=make_item(), study_uid=new_uid("2.25"))
