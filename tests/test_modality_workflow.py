"""One exam through the gateway, as an archive, a RIS and a dose registry see it: each image's
Irradiation Event UID is its exposure's event in the dose report, the MPPS that completes the
step lists that report (IHE REM), and the images' collimator edges are the simulator's field.
Everything is read from what the peers received (Orthanc's stored files, the MPPS SCP's view),
never from the gateway's own objects."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.app import Gateway
from gateway.config import (
    CalibrationConfig,
    Config,
    DestinationConfig,
    DetectorConfig,
    GeneratorConfig,
    MppsConfig,
    SpoolConfig,
)
from gateway.errors import DxgateError
from gateway.types import Anatomy, ProtocolCode, Technique
from hw_sim.collimation import Field
from hw_sim.room import SimRoom
from tests.dicom_inputs import make_item
from tests.mpps_scp import MppsScp
from tests.peers import Orthanc

RDSR = "1.2.840.10008.5.1.4.1.1.88.67"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
MODE = "8x8"
IRRADIATION_EVENT = "113706"
IRRADIATION_EVENT_UID = "113769"
FIELDS = [(0.2, 0.15, 0.8, 0.9), (0.05, 0.3, 0.6, 0.7), None]  # fractions of the panel; None: open


@pytest.fixture
def room() -> Iterator[SimRoom]:
    with SimRoom(seed=5) as sim:
        yield sim


@pytest.fixture
def scp() -> Iterator[MppsScp]:
    peer = MppsScp().start()
    yield peer
    peer.stop()


def gateway_for(tmp_path: Path, room: SimRoom, archive: Orthanc, scp: MppsScp) -> Gateway:
    config = Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode=MODE),
                    generator=GeneratorConfig(port=room.start_generator()),
                    calibration=CalibrationConfig(dark_frames=4, flat_frames=4), spool=SpoolConfig(min_free_mb=0),
                    mpps=MppsConfig(enabled=True, port=scp.port, timeout_s=5),
                    destinations=(DestinationConfig(name="archive", port=archive.dicom_port, called_ae=archive.aet,
                                                    for_processing=True),))
    gw = Gateway(config, usb_backend=room.usb_backend())
    room.place("open")
    gw.calibrate()
    room.place("chest")
    return gw


def run_exam(gw: Gateway, room: SimRoom) -> tuple[list[list[int] | None], int]:
    """Three chest PA exposures, each with its own collimation; returns the
    simulator's field of each, in pixels (first row, end row, first column, end column), and the
    number of pulses the simulated generator gave."""
    before = len(room.pulses)
    ex = gw.exams
    ex.start(make_item(), operator="Meier^Tina")
    ex.choose_view(Anatomy("CHEST", "PA"), Technique(kvp=110.0, mas=2.5), 400.0)
    ex.arm()
    truths: list[list[int] | None] = []
    for fractions in FIELDS:
        room.collimate(None if fractions is None else Field.from_fractions(*fractions, panel_mm=room.panel_mm))
        truths.append(room.ground_truth(MODE)["field_pixels"])  # type: ignore[arg-type]
        assert ex.expose_chosen() is not None
    ex.finish()
    for _ in range(5):
        gw.forward_due()
        if not any(n for state, n in gw.spool.counts().items() if state != "sent"):
            break
    assert gw.mpps_sender is not None
    while gw.mpps_sender.send_one():
        pass
    return truths, len(room.pulses) - before


def stored(archive: Orthanc, tmp_path: Path, check: Callable[[Path | str], None]) -> list[Dataset]:
    """Every object the archive holds, as its own files, each checked by dciodvfy."""
    out = []
    for n, orthanc_id in enumerate(archive.instances()):
        path = tmp_path / f"stored-{n}.dcm"
        path.write_bytes(archive.instance_file(orthanc_id))
        check(path)
        out.append(pydicom.dcmread(io.BytesIO(path.read_bytes())))
    return out


def event_uids(report: Dataset) -> list[str]:
    """The Irradiation Event UID of each TID 10003 event, in the report's order (the SR tree)."""
    return [str(c.UID) for node in report.ContentSequence if node.ConceptNameCodeSequence[0].CodeValue ==
            IRRADIATION_EVENT for c in node.ContentSequence
            if c.ConceptNameCodeSequence[0].CodeValue == IRRADIATION_EVENT_UID]


@pytest.mark.peers
def test_images_the_dose_report_and_the_mpps_agree_on_each_exposure(
        tmp_path: Path, room: SimRoom, orthanc: Orthanc, scp: MppsScp,
        dciodvfy: Callable[[Path | str], None]) -> None:
    with gateway_for(tmp_path, room, orthanc, scp) as gw:
        truths, pulses = run_exam(gw, room)
        assert gw.alarms.active() == []
    objects = stored(orthanc, tmp_path, dciodvfy)  # Orthanc accepted and indexed each one
    [report] = [d for d in objects if d.SOPClassUID == RDSR]
    images = sorted((d for d in objects if d.SOPClassUID in (DX, DX_PROCESSING)),
                    key=lambda d: (int(d.InstanceNumber), str(d.SOPClassUID)))
    assert [(int(d.InstanceNumber), str(d.SOPClassUID)) for d in images] == [
        (n, c) for n in (1, 2, 3) for c in (DX, DX_PROCESSING)]

    # 1. Each image (For Presentation and For Processing alike) names its exposure's event.
    events = event_uids(report)
    assert len(events) == len(set(events)) == pulses == 3
    for d in images:
        assert str(d.IrradiationEventUID) == events[int(d.InstanceNumber) - 1]

    # 3. The collimator edges are the simulator's field (1-based, inclusive), the whole image when open.
    for d in images:
        field = truths[int(d.InstanceNumber) - 1]
        r0, r1, c0, c1 = field if field is not None else (0, int(d.Rows), 0, int(d.Columns))
        assert d.CollimatorShape == "RECTANGULAR"
        assert (d.CollimatorLeftVerticalEdge, d.CollimatorRightVerticalEdge, d.CollimatorUpperHorizontalEdge,
                d.CollimatorLowerHorizontalEdge) == (c0 + 1, c1, r0 + 1, r1)

    # 2. The completed step lists the dose report under Referenced Non-Image Composite SOP Instance.
    assert scp.refusals == [] and [k for k, _, _ in scp.log] == ["create", "set"]
    step = scp.steps[scp.log[0][1]]
    assert step.PerformedProcedureStepStatus == "COMPLETED"
    by_series = {str(s.SeriesInstanceUID): s for s in step.PerformedSeriesSequence}
    [ref] = [r for s in by_series.values() for r in s.ReferencedNonImageCompositeSOPInstanceSequence]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (RDSR, report.SOPInstanceUID)
    assert by_series[str(report.SeriesInstanceUID)].ReferencedImageSequence == []
    listed = {str(r.ReferencedSOPInstanceUID) for s in by_series.values() for r in s.ReferencedImageSequence}
    assert listed == {str(d.SOPInstanceUID) for d in images if d.SOPClassUID == DX}


def finish_and_deliver(gw: Gateway) -> None:
    gw.exams.finish()
    for _ in range(5):
        gw.forward_due()
        if not any(n for state, n in gw.spool.counts().items() if state != "sent"):
            break
    assert gw.mpps_sender is not None
    while gw.mpps_sender.send_one():
        pass


def one_view(gw: Gateway, anatomy: Anatomy) -> str:
    gw.exams.choose_view(anatomy, Technique(kvp=70.0, mas=4.0), 400.0)
    gw.exams.arm()
    image = gw.exams.expose_chosen()
    assert image is not None
    return image.instance.sop_instance_uid


@pytest.mark.peers
def test_an_exam_reopened_to_add_a_view_is_a_new_series_and_step_of_the_same_study(
        tmp_path: Path, room: SimRoom, orthanc: Orthanc, scp: MppsScp,
        dciodvfy: Callable[[Path | str], None]) -> None:
    item = make_item()
    with gateway_for(tmp_path, room, orthanc, scp) as gw:
        gw.exams.start(item, operator="Meier^Tina")
        first = one_view(gw, Anatomy("CHEST", "PA"))
        finish_and_deliver(gw)
        reopened = gw.exams.reopen(item.study_instance_uid, operator="Huber^Jan")
        added = one_view(gw, Anatomy("CHEST", "LL"))
        finish_and_deliver(gw)
        assert gw.alarms.active() == []
        # an unscheduled exam keeps the study UID it was given, too
        unscheduled = gw.exams.start(None)
        gw.exams.finish()
        assert gw.exams.reopen(unscheduled.study_uid).study_uid == unscheduled.study_uid
        gw.exams.finish()

    objects = {str(d.SOPInstanceUID): d for d in stored(orthanc, tmp_path, dciodvfy)}
    a, b = objects[first], objects[added]
    assert a.StudyInstanceUID == b.StudyInstanceUID == item.study_instance_uid == reopened.study_uid
    assert a.SeriesInstanceUID != b.SeriesInstanceUID and (a.SeriesNumber, b.SeriesNumber) == (1, 2)
    assert a.AccessionNumber == b.AccessionNumber == item.accession_number
    reports = [d for d in objects.values() if d.SOPClassUID == RDSR]
    assert len(reports) == 2 and {r.StudyInstanceUID for r in reports} == {item.study_instance_uid}
    # Orthanc files them under one study
    assert len(orthanc.rest("/studies")) == 1

    # two procedure steps, each completed with its own series and its own dose report
    assert scp.refusals == [] and [k for k, _, _ in scp.log] == ["create", "set", "create", "set"]
    steps = [scp.steps[scp.log[0][1]], scp.steps[scp.log[2][1]]]
    assert scp.log[0][1] != scp.log[2][1]
    for step, image in zip(steps, (a, b), strict=True):
        assert step.PerformedProcedureStepStatus == "COMPLETED"
        assert step.ScheduledStepAttributesSequence[0].StudyInstanceUID == item.study_instance_uid
        images = [str(r.ReferencedSOPInstanceUID) for s in step.PerformedSeriesSequence
                  for r in s.ReferencedImageSequence]
        assert images == [str(image.SOPInstanceUID)]
        assert image.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == \
            scp.log[0 if image is a else 2][1]
        assert step.PerformedProcedureStepID == image.PerformedProcedureStepID
    assert {str(r.ReferencedSOPInstanceUID) for step in steps for s in step.PerformedSeriesSequence
            for r in s.ReferencedNonImageCompositeSOPInstanceSequence} == {str(r.SOPInstanceUID) for r in reports}


@pytest.mark.peers
def test_a_group_of_requested_procedures_is_one_exam_that_names_each(
        tmp_path: Path, room: SimRoom, orthanc: Orthanc, scp: MppsScp,
        dciodvfy: Callable[[Path | str], None]) -> None:
    chest = make_item()
    ribs = make_item(accession_number="ACC20261123", requested_procedure_id="RP-78", sps_id="SPS-78-1",
                     requested_procedure_description="XR Rippen links", sps_description="Rippen links",
                     procedure_codes=(ProtocolCode("RPID-RIPL", "99KLINIKUM", "Rippen links"),),
                     protocol_codes=(ProtocolCode("36572-6", "LN", "XR Ribs"),))
    with gateway_for(tmp_path, room, orthanc, scp) as gw:
        with pytest.raises(DxgateError, match="one patient"):
            gw.exams.start_group([chest, make_item(patient_id="PAT-0816")])
        gw.exams.start_group([chest, ribs], operator="Meier^Tina")
        uid = one_view(gw, Anatomy("CHEST", "PA"))
        finish_and_deliver(gw)
        assert gw.alarms.active() == []

    objects = {str(d.SOPInstanceUID): d for d in stored(orthanc, tmp_path, dciodvfy)}
    image = objects[uid]
    [report] = [d for d in objects.values() if d.SOPClassUID == RDSR]
    orders = [(o.requested_procedure_id, o.accession_number, o.study_instance_uid, o.sps_id) for o in (chest, ribs)]
    # the image: the first order's study, no single accession, every requested procedure named
    assert image.StudyInstanceUID == report.StudyInstanceUID == chest.study_instance_uid
    assert image.AccessionNumber == ""
    assert [(r.RequestedProcedureID, r.AccessionNumber, r.StudyInstanceUID, r.ScheduledProcedureStepID)
            for r in image.RequestAttributesSequence] == orders
    assert [r.ReferencedSOPInstanceUID for r in image.ReferencedStudySequence] == [
        chest.referenced_study_sop_instance_uid, ribs.referenced_study_sop_instance_uid]
    assert {c.CodeValue for c in image.ProcedureCodeSequence} == {"RPID-THX2", "RPID-RIPL"}
    assert {c.CodeValue for c in image.PerformedProtocolCodeSequence} == {"36554-4", "36572-6"}
    # the dose report names both requests
    assert [(r.RequestedProcedureID, r.AccessionNumber, r.StudyInstanceUID)
            for r in report.ReferencedRequestSequence] == [o[:3] for o in orders]
    # one procedure step, with one scheduled step item per order
    assert scp.refusals == [] and [k for k, _, _ in scp.log] == ["create", "set"]
    step = scp.steps[scp.log[0][1]]
    assert [(s.RequestedProcedureID, s.AccessionNumber, s.StudyInstanceUID, s.ScheduledProcedureStepID)
            for s in step.ScheduledStepAttributesSequence] == orders
    assert step.PerformedProcedureStepStatus == "COMPLETED"
