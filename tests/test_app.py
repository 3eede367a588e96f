"""The composition root: what a technologist and an engineer rely on across the stages."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from pydantic import ValidationError

from gateway.app import Gateway
from gateway.config import (
    CalibrationConfig,
    Config,
    DestinationConfig,
    DetectorConfig,
    ExposureConfig,
    GeneratorConfig,
    ReviewConfig,
    WorklistConfig,
)
from gateway.errors import ExposureRefused, WorklistError
from gateway.peers import StorageServer, WorklistServer, make_worklist_entry
from gateway.types import Technique
from hw_sim.room import SimRoom
from tests.peers import free_port

MODE = "8x8"


@pytest.fixture
def room() -> Iterator[SimRoom]:
    with SimRoom(seed=3) as sim:
        yield sim


def config_for(tmp_path: Path, room: SimRoom, pacs_port: int) -> Config:
    return Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode=MODE),
                  generator=GeneratorConfig(port=room.start_generator()),
                  calibration=CalibrationConfig(dark_frames=4, flat_frames=4),
                  destinations=(DestinationConfig(name="pacs", port=pacs_port, called_ae="PACS"),))


def test_no_exposure_without_a_valid_calibration(tmp_path: Path, room: SimRoom) -> None:
    with Gateway(config_for(tmp_path, room, free_port()), usb_backend=room.usb_backend()) as gw:
        with pytest.raises(ExposureRefused, match="before the tube fired: no calibration for detector SIM-0001"):
            gw.expose(gw.open_exam(None))
        assert room.pulses == []  # refused before the tube fired: no dose for nothing
        assert sum(gw.spool.counts().values()) == 0
    state = Path(tmp_path / "state")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700  # spool, state.db, worklist cache: owner only


def test_unscheduled_exam_gets_generated_study_and_empty_accession(
        tmp_path: Path, room: SimRoom, dciodvfy: Callable[[Path], None]) -> None:
    with Gateway(config_for(tmp_path, room, free_port()), usb_backend=room.usb_backend()) as gw:
        gw.calibrate()
        room.place("chest")
        exam = gw.open_exam(None)
        first, second = gw.expose(exam), gw.expose(exam)
    ds = pydicom.dcmread(first.instance.path)
    assert ds.AccessionNumber == "" and ds.StudyInstanceUID == exam.study_uid
    assert ds.StudyInstanceUID.startswith("2.25.")
    assert pydicom.dcmread(second.instance.path).SeriesInstanceUID == ds.SeriesInstanceUID
    assert [ds.InstanceNumber, pydicom.dcmread(second.instance.path).InstanceNumber] == [1, 2]
    dciodvfy(Path(first.instance.path))


def test_saved_while_pacs_is_down_then_sent_after_restart(tmp_path: Path, room: SimRoom) -> None:
    """Acquisition never waits for the archive; a restart picks up the backlog and the calibration."""
    port = free_port()
    config = config_for(tmp_path, room, port).model_copy(update={"review": ReviewConfig(hold_s=0)})  # sent at once
    with Gateway(config, usb_backend=room.usb_backend()) as gw:
        calibration_id = gw.calibrate().calibration_id
        image = gw.expose(gw.open_exam(None))
        results = gw.forward_due()
        assert [r.outcome for r in results] == ["retry"]
        assert [d.state for d in gw.spool.deliveries(image.instance.sop_instance_uid)] == ["pending"]

    pacs = StorageServer(tmp_path / "pacs", ae_title="PACS")
    pacs.start(port)
    try:
        an_hour_later = datetime.now(UTC) + timedelta(hours=1)  # the backoff has elapsed
        with Gateway(config, usb_backend=room.usb_backend(), clock=lambda: an_hour_later) as gw:
            assert [r.outcome for r in gw.forward_due()] == ["sent"]
            assert gw.corrector().cal.calibration_id == calibration_id  # found again on disk
    finally:
        pacs.stop()
    assert [p.name for p in pacs.received] == [f"{image.instance.sop_instance_uid}.dcm"]


def test_ris_outage_shows_the_last_worklist_marked_as_cached(tmp_path: Path, room: SimRoom) -> None:
    entry = make_worklist_entry(patient_name="Doe^Jane", patient_id="P1", birth_date="19700101", sex="F",
                                accession="ACC1", study_uid="1.2.826.0.1.3680043.10.999.5",
                                requested_procedure_id="RP1", sps_id="S1", sps_description="Chest PA",
                                station_ae="DXGATE", start=datetime.now(UTC))
    second = make_worklist_entry(patient_name="Roe^Richard", patient_id="P2", birth_date="19600202", sex="M",
                                 accession="ACC2", study_uid="1.2.826.0.1.3680043.10.999.6",
                                 requested_procedure_id="RP2", sps_id="S2", sps_description="Chest PA",
                                 station_ae="DXGATE", start=datetime.now(UTC))
    ris = WorklistServer([entry, second], ae_title="RIS")
    port = ris.start()
    config = config_for(tmp_path, room, free_port()).model_copy(
        update={"worklist": WorklistConfig(port=port, called_ae="RIS", timeout_s=2.0)})
    with Gateway(config, usb_backend=room.usb_backend()) as gw:
        live = gw.worklist()
        assert live.source == "ris" and sorted(i.accession_number for i in live.items) == ["ACC1", "ACC2"]
        assert [i.patient_id for i in gw.worklist(accession_number="ACC1").items] == ["P1"]
        assert gw.worklist(patient_id="P9").items == []
        day = gw.worklist()
        assert day.items == live.items  # a search did not shrink the day's cache
        ris.stop()
        offline = gw.worklist()
        assert offline.source == "cache" and offline.items == day.items
        assert offline.as_of == day.as_of and str(port) in offline.error
        assert [i.accession_number for i in gw.worklist(patient_id="P2").items] == ["ACC2"]  # searched offline
        Path(config.path(config.worklist.cache)).unlink()
        with pytest.raises(WorklistError, match=str(port)):  # no cache either: say so, show nothing stale
            gw.worklist()


def test_anatomy_that_cannot_be_coded_is_refused_before_the_tube_fires(tmp_path: Path, room: SimRoom) -> None:
    base = config_for(tmp_path, room, free_port())
    with pytest.raises(ValidationError, match="KNEE is paired"):  # refused with the configuration
        ExposureConfig(body_part="KNEE")
    with Gateway(base.model_copy(update={"exposure": ExposureConfig(body_part="KNEE", laterality="R")}),
                 usb_backend=room.usb_backend()) as gw:
        gw.calibrate()
        pulses = len(room.pulses)
        with pytest.raises(ExposureRefused, match="laterality 'X'"):
            gw.expose(gw.open_exam(None), laterality="X")
        assert len(room.pulses) == pulses  # no dose for an image that could not be coded
        left = gw.expose(gw.open_exam(None), laterality="L")
    assert pydicom.dcmread(left.instance.path).ImageLaterality == "L"


def test_a_calibration_that_expires_while_running_is_refused(tmp_path: Path, room: SimRoom) -> None:
    now = [datetime.now(UTC)]
    config = config_for(tmp_path, room, free_port()).model_copy(
        update={"calibration": CalibrationConfig(dark_frames=4, flat_frames=4, max_age_days=30)})
    with Gateway(config, usb_backend=room.usb_backend(), clock=lambda: now[0]) as gw:
        gw.calibrate()
        gw.expose(gw.open_exam(None))
        now[0] += timedelta(days=31)  # the daemon kept running for a month
        pulses = len(room.pulses)
        with pytest.raises(ExposureRefused, match="recalibrate"):
            gw.expose(gw.open_exam(None))
        assert len(room.pulses) == pulses
        room.place("open")
        fresh = gw.calibrate()  # a new set is picked up at once
        room.place("chest")
        image = gw.expose(gw.open_exam(None))
    assert image.frame.calibration_id == fresh.calibration_id


def test_an_image_without_a_computable_exposure_index_is_still_kept(
        tmp_path: Path, room: SimRoom, dciodvfy: Callable[[Path], None]) -> None:
    with Gateway(config_for(tmp_path, room, free_port()), usb_backend=room.usb_backend()) as gw:
        gw.calibrate()
        room.place("open")
        image = gw.expose(gw.open_exam(None), Technique(kvp=120.0, mas=200.0))  # the panel saturates
    assert image.exposure_index is None
    ds = pydicom.dcmread(image.instance.path)
    assert "ExposureIndex" not in ds and float(ds.KVP) == pytest.approx(120, abs=1)
    dciodvfy(Path(image.instance.path))


def test_an_exam_holds_previews_only_not_frames_and_only_the_latest(
        tmp_path: Path, room: SimRoom, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays flat however many exposures an exam takes (the soak found 4 MB kept per image)."""
    import numpy as np

    from gateway import exam_workflow
    from gateway.types import Anatomy

    monkeypatch.setattr(exam_workflow, "PREVIEWS_KEPT", 2)
    with Gateway(config_for(tmp_path, room, free_port()), usb_backend=room.usb_backend()) as gw:
        gw.calibrate()
        room.place("chest")
        ex = gw.exams
        ex.start(None)
        ex.choose_view(Anatomy("CHEST", "PA", None), Technique(kvp=80.0, mas=1.2), 400.0)
        ex.arm(True)
        images = [ex.expose_chosen() for _ in range(3)]
        assert [r.instance.sop_instance_uid for r in ex.reviewed] == [i.instance.sop_instance_uid for i in images
                                                                      if i is not None]
        assert [r.preview is not None for r in ex.reviewed] == [False, True, True]
        assert all(r.preview.startswith(b"\x89PNG") for r in ex.reviewed[1:] if r.preview)
        held = [v for r in ex.reviewed for v in vars(r).values() if isinstance(v, np.ndarray)]
        assert held == []  # no pixel array is kept by the exam


def test_patient_text_that_cannot_be_written_is_refused_before_the_tube_fires(tmp_path: Path, room: SimRoom) -> None:
    """An unscheduled patient typed with an ESC or a control character: refused at exam open, and
    (defence in depth) before the tube fires, never after the dose by the DICOM encoder."""
    from gateway.errors import DxgateError
    from gateway.exam_workflow import Exam
    from gateway.types import WorklistItem

    item = WorklistItem(patient_name="Kim\x1b$)C^Minji", patient_id="P1", patient_birth_date=None, patient_sex="F",
                        accession_number="", study_instance_uid="", requested_procedure_id="",
                        requested_procedure_description="", sps_id="", sps_description="", sps_start=None,
                        modality="DX", scheduled_station_ae="")
    with Gateway(config_for(tmp_path, room, free_port()), usb_backend=room.usb_backend()) as gw:
        gw.calibrate()
        pulses = len(room.pulses)
        with pytest.raises(DxgateError, match="cannot be written into an image: .*patient_name"):
            gw.open_exam(item)
        with pytest.raises(ExposureRefused, match="before the tube fired: .*patient_name"):
            gw.expose(Exam(item=item, study_uid="1.2.3", series_uid="1.2.3.4"))
        assert len(room.pulses) == pulses and gw.raw_store.pending() == []
        assert "Kim" not in str(gw.alarms.active())


def test_a_release_waiting_for_the_hand_switch_is_withdrawn_when_its_calibration_expires(
        tmp_path: Path, room: SimRoom, monkeypatch: pytest.MonkeyPatch) -> None:
    """Armed before the calibration expired, pressed after: the gateway withdraws the release
    itself, so the press gives no dose."""
    import threading

    from gateway import exam_workflow
    from gateway.types import Anatomy

    monkeypatch.setattr(exam_workflow, "RECHECK_S", 0.05)
    now = [datetime.now(UTC)]
    config = config_for(tmp_path, room, free_port()).model_copy(
        update={"calibration": CalibrationConfig(dark_frames=4, flat_frames=4, max_age_days=30)})
    with Gateway(config, usb_backend=room.usb_backend(), clock=lambda: now[0]) as gw:
        gw.calibrate()
        ex = gw.exams
        ex.start(None)
        ex.choose_view(Anatomy("CHEST", "PA", None), Technique(kvp=80.0, mas=1.2), 400.0)
        ex.arm(True)
        withdrawn = ex.wait_armed(1.0)
        assert withdrawn is not None
        outcome: list[BaseException | object] = []
        waiter = threading.Thread(target=lambda: outcome.append(_catch(lambda: ex.expose_chosen(withdrawn))))
        waiter.start()
        released = threading.Event()
        for _ in range(1000):  # the generator's own state: the release is up
            if room.generator.state == "ENABLED" or released.wait(0.01):
                break
        assert room.generator.state == "ENABLED"
        now[0] += timedelta(days=31)  # the release waits overnight; the calibration expires
        waiter.join(30)
        assert not waiter.is_alive(), "the release was never withdrawn"
        [err] = outcome
        assert isinstance(err, ExposureRefused) and "recalibrate" in str(err)
        pulses = len(room.pulses)
        assert room.generator.press() is False and len(room.pulses) == pulses


def _catch(fn: Callable[[], object]) -> BaseException | object:
    try:
        return fn()
    except BaseException as exc:
        return exc
