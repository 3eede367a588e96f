"""The dose report through the gateway: closing an exam writes one X-Ray Radiation Dose SR with
one irradiation event per pulse the simulated generator gave (rejected exposures included), its
values those of the pulses, routed like an image: the dose registry (Orthanc, which must accept and
index it) gets only the report, the PACS (DCMTK storescp) only the images."""

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
    DoseReportConfig,
    GeneratorConfig,
    SpoolConfig,
)
from gateway.errors import FrameKeptError
from gateway.types import Anatomy, Technique
from hw_sim.room import SimRoom
from tests.dicom_inputs import make_item
from tests.peers import Orthanc, StoreSCP

RDSR = "1.2.840.10008.5.1.4.1.1.88.67"
DX = "1.2.840.10008.5.1.4.1.1.1.1"


@pytest.fixture
def room() -> Iterator[SimRoom]:
    with SimRoom(seed=11) as sim:
        yield sim


def config_for(tmp_path: Path, room: SimRoom, pacs: StoreSCP, registry: Orthanc, *, enabled: bool = True) -> Config:
    return Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode="8x8"),
                  generator=GeneratorConfig(port=room.start_generator()),
                  calibration=CalibrationConfig(dark_frames=4, flat_frames=4), spool=SpoolConfig(min_free_mb=0),
                  dose_report=DoseReportConfig(enabled=enabled),
                  destinations=(DestinationConfig(name="pacs", port=pacs.port, called_ae=pacs.aet,
                                                  only_sop_classes=(DX,)),
                                DestinationConfig(name="dose-registry", port=registry.dicom_port,
                                                  called_ae=registry.aet, only_sop_classes=(RDSR,))))


def run_exam(gw: Gateway, room: SimRoom) -> tuple[str, list[tuple[float, float, float]], list[str]]:
    """Two chest PA and a left knee lateral (the second chest rejected); returns the study UID,
    the simulator's pulses of the exam and the images' UIDs."""
    item = make_item()
    before = len(room.pulses)
    ex = gw.exams
    ex.start(item, operator="Meier^Tina")
    ex.choose_view(Anatomy("CHEST", "PA"), Technique(kvp=110.0, mas=2.5), 400.0)
    ex.arm()
    images = []
    for _ in range(2):
        image = ex.expose_chosen()
        assert image is not None
        images.append(image.instance.sop_instance_uid)
    ex.review(images[1], "rejected", "motion")
    ex.choose_view(Anatomy("KNEE", "LL", "L"), Technique(kvp=65.0, mas=5.0), 400.0)
    ex.arm()
    knee = ex.expose_chosen()
    assert knee is not None
    images.append(knee.instance.sop_instance_uid)
    ex.finish()
    return item.study_instance_uid, room.pulses[before:], images


def forward_all(gw: Gateway) -> None:
    for _ in range(5):
        gw.forward_due()
        counts = gw.spool.counts()
        if not any(n for state, n in counts.items() if state not in ("sent", "withheld")):  # withheld: rejected
            return
    raise AssertionError(f"deliveries left: {gw.spool.counts()}")


def calibrated(config: Config, room: SimRoom) -> Gateway:
    gw = Gateway(config, usb_backend=room.usb_backend())
    room.place("open")
    gw.calibrate()
    room.place("chest")
    return gw


def events(ds: Dataset) -> list[Dataset]:
    return [c for c in ds.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "113706"]


def value(node: Dataset, code: str) -> float:
    [item] = [c for c in node.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == code]
    return float(item.MeasuredValueSequence[0].NumericValue)


def test_closing_an_exam_sends_one_dose_report_with_every_pulse_to_the_dose_registry_only(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP, orthanc: Orthanc,
        dciodvfy: Callable[[Path | str], None]) -> None:
    with calibrated(config_for(tmp_path, room, storescp, orthanc), room) as gw:
        study_uid, pulses, images = run_exam(gw, room)
        area_cm2 = room.generator.field_area_cm2
        forward_all(gw)
        assert gw.alarms.active() == []

    # the PACS got the images, and only them
    received = [pydicom.dcmread(p) for p in storescp.files()]
    # (the rejected one, images[1], is withheld unless it left before the verdict)
    assert {images[0], images[2]} <= {str(d.SOPInstanceUID) for d in received} <= set(images)
    assert {d.SOPClassUID for d in received} == {DX}
    # the dose registry got one report, and nothing else; it indexed it in the images' study
    [orthanc_id] = orthanc.instances()
    tags = orthanc.rest(f"/instances/{orthanc_id}/simplified-tags")
    assert (tags["SOPClassUID"], tags["Modality"], tags["StudyInstanceUID"]) == (RDSR, "SR", study_uid)
    assert tags["PatientID"] == received[0].PatientID and tags["AccessionNumber"] == received[0].AccessionNumber
    stored = tmp_path / "stored-rdsr.dcm"
    stored.write_bytes(orthanc.instance_file(orthanc_id))  # the archive's own copy
    dciodvfy(stored)
    report = pydicom.dcmread(io.BytesIO(stored.read_bytes()))

    # one event per pulse the generator gave, the rejected one included, with the pulse's values
    nodes = events(report)
    assert len(pulses) == len(nodes) == 3
    for node, (kvp, mas, kerma_ugy) in zip(nodes, pulses, strict=True):
        assert value(node, "113733") == pytest.approx(kvp, abs=0.051)  # readback: 0.1 kV steps
        assert value(node, "113736") == pytest.approx(mas * 1000.0, abs=5.1)  # µAs; readback: 0.01 mAs steps
        # DAP = kerma x field area, in Gy·m²: µGy x 1e-6, cm² x 1e-4
        assert value(node, "122130") == pytest.approx(kerma_ugy * 1e-6 * area_cm2 * 1e-4, rel=1e-3, abs=5e-10)
    comments = [[c.TextValue for c in n.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "121106"]
                for n in nodes]
    assert comments == [[], ["Image rejected by the technologist: motion"], []]
    regions = [[c.ConceptCodeSequence[0].CodeValue for c in n.ContentSequence
                if c.ConceptNameCodeSequence[0].CodeValue == "123014"] for n in nodes]
    assert regions == [["816094009"], ["816094009"], ["72696002"]]  # chest, chest, knee
    assert len({str(c.UID) for n in nodes for c in n.ContentSequence
                if c.ConceptNameCodeSequence[0].CodeValue == "113769"}) == 3  # a UID per event


def test_no_dose_report_when_switched_off(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP, orthanc: Orthanc) -> None:
    with calibrated(config_for(tmp_path, room, storescp, orthanc, enabled=False), room) as gw:
        run_exam(gw, room)
        forward_all(gw)
        assert gw.alarms.active() == []
    assert orthanc.instances() == []
    assert len(storescp.files()) in (2, 3)  # the rejected image is withheld unless it left before the verdict


def test_an_exam_closed_without_exposures_reports_no_dose(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP, orthanc: Orthanc) -> None:
    with calibrated(config_for(tmp_path, room, storescp, orthanc), room) as gw:
        gw.exams.start(make_item())
        gw.exams.finish(completed=False, reason="patient-refused")
        assert gw.spool.listing() == [] and gw.alarms.active() == []


def test_a_report_that_cannot_be_made_raises_an_alarm_and_the_exam_still_closes(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP, orthanc: Orthanc) -> None:
    config = config_for(tmp_path, room, storescp, orthanc)
    pacs_only = config.model_copy(update={"destinations": config.destinations[:1]})  # nothing takes a report
    with calibrated(pacs_only, room) as gw:
        run_exam(gw, room)
        assert gw.exams.current is None
        assert [a.code for a in gw.alarms.active()] == ["dose-report-not-made"]
        assert "no destination takes this object" in gw.alarms.active()[0].message


def test_an_exposure_whose_image_could_not_be_made_is_still_in_the_report(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP, orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch) -> None:
    with calibrated(config_for(tmp_path, room, storescp, orthanc), room) as gw:
        ex = gw.exams
        ex.start(None)
        ex.choose_view(Anatomy("CHEST", "PA"), Technique(kvp=110.0, mas=2.5), 400.0)
        ex.arm()

        def fail(*args: object, **kwargs: object) -> None:
            raise OSError("disk gone")

        monkeypatch.setattr(gw.pipeline, "make_image", fail)
        before = len(room.pulses)
        with pytest.raises(FrameKeptError):
            ex.expose_chosen()
        exam = ex.finish()
        assert len(room.pulses) - before == 1  # the tube fired
        report = gw.spool.instance(exam.dose_report_uid)
        assert report is not None
        [event] = events(pydicom.dcmread(report.path))
        # the cause fixed, the kept frame's image names the same irradiation event as the report
        monkeypatch.undo()
        [result] = gw.reprocess()
        assert result.outcome == "saved", result.error
        image = gw.spool.instance(result.sop_instance_uid)
        assert image is not None
        [event_uid] = [str(c.UID) for c in event.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "113769"]
        assert str(pydicom.dcmread(image.path).IrradiationEventUID) == event_uid
