"""Rejected images are not clinical at the archive (IHE; issue 11): held for review and withheld
when rejected, or — once an image has left — withdrawn by a KOS "Rejected for Quality Reasons".

Real peers: DCMTK storescp (its received files) and Orthanc (its REST API) are the truth.
The gateway clock is injected, so the auto-accept delay passes without sleeping.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest

from gateway.app import Gateway
from gateway.config import CalibrationConfig, Config, DestinationConfig, DetectorConfig, GeneratorConfig, ReviewConfig
from gateway.dicom import XRAY_RADIATION_DOSE_SR
from gateway.dicom.kos import KEY_OBJECT_SELECTION
from gateway.spool import DeliveryState
from hw_sim.room import SimRoom
from tests.peers import Orthanc, StoreSCP
from tests.review_steps import Clock, armed, expose

HOLD_S = 60.0


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, StoreSCP]]:
    orthanc = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    try:
        scp = StoreSCP(tmp_path_factory.mktemp("storescp")).start()
        try:
            yield orthanc, scp
        finally:
            scp.stop()
    finally:
        orthanc.stop()


@pytest.fixture
def room() -> Iterator[SimRoom]:
    with SimRoom(seed=5) as sim:
        yield sim


def gateway(tmp_path: Path, room: SimRoom, peers: tuple[Orthanc, StoreSCP], review: ReviewConfig,
            clock: Clock, *, research: bool = False) -> Gateway:
    """Orthanc and storescp as clinical archives; with `research`, storescp also takes the DX
    For Processing image of each exposure."""
    orthanc, scp = peers
    config = Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode="8x8"),
                    generator=GeneratorConfig(port=room.start_generator()),
                    calibration=CalibrationConfig(dark_frames=4, flat_frames=4), review=review,
                    destinations=(DestinationConfig(name="orthanc", port=orthanc.dicom_port, called_ae=orthanc.aet),
                                  DestinationConfig(name="storescp", port=scp.port, called_ae=scp.aet,
                                                    for_processing=research)))
    gw = Gateway(config, usb_backend=room.usb_backend(), clock=clock)
    gw.calibrate()
    room.place("chest")
    return gw


def at_storescp(scp: StoreSCP) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in scp.files()}


def at_orthanc(orthanc: Orthanc, uids: set[str]) -> set[str]:
    return {u for u in uids if orthanc.find_instance(u) is not None}


def test_held_until_reviewed_a_rejected_image_never_reaches_the_archives(
        tmp_path: Path, room: SimRoom, peers: tuple[Orthanc, StoreSCP]) -> None:
    orthanc, scp = peers
    clock = Clock()
    with gateway(tmp_path, room, peers, ReviewConfig(hold_s=HOLD_S, send_rejection_kos=True), clock) as gw:
        ex = armed(gw)
        accepted, rejected, unjudged = (expose(ex).instance.sop_instance_uid for _ in range(3))
        everything = {accepted, rejected, unjudged}
        assert gw.forward_due() == []  # saved and queued, but held: nothing leaves before a verdict
        assert at_storescp(scp) & everything == set() and at_orthanc(orthanc, everything) == set()

        ex.review(accepted, "accepted")
        ex.review(rejected, "rejected", "positioning")
        assert {(r.uid, r.destination, r.outcome) for r in gw.forward_due()} == {
            (accepted, "orthanc", "sent"), (accepted, "storescp", "sent")}

        clock.now += timedelta(seconds=HOLD_S + 1)  # the auto-accept delay passes: the unjudged one goes
        assert {(r.uid, r.outcome) for r in gw.forward_due()} == {(unjudged, "sent")}
        clock.now += timedelta(days=1)
        assert gw.forward_due() == []  # the rejected one never goes, however long
        assert {d.state for d in gw.spool.deliveries(rejected)} == {DeliveryState.WITHHELD}
        assert Path(gw.spool.deliveries(rejected)[0].path).is_file()  # kept locally (TG-305)
        assert gw.spool.retain(gw.forwarder.retention_policy(), clock.now.timestamp() + 30 * 86400) \
            .count(rejected) == 0
    assert at_storescp(scp) & everything == {accepted, unjudged}
    assert at_orthanc(orthanc, everything) == {accepted, unjudged}
    # it never left, so there is nothing to withdraw: no rejection note anywhere
    assert not [p for p in scp.files() if pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID
                == KEY_OBJECT_SELECTION]


def test_closing_the_exam_releases_images_not_judged(
        tmp_path: Path, room: SimRoom, peers: tuple[Orthanc, StoreSCP]) -> None:
    _orthanc, scp = peers
    clock = Clock()
    with gateway(tmp_path, room, peers, ReviewConfig(hold_s=HOLD_S), clock) as gw:
        ex = armed(gw)
        uid = expose(ex).instance.sop_instance_uid
        assert gw.forward_due() == []
        ex.finish()
        assert {(r.uid, r.outcome) for r in gw.forward_due() if r.uid == uid} == {(uid, "sent")}
    assert uid in at_storescp(scp)


def test_an_image_rejected_after_it_left_is_withdrawn_by_a_kos(
        tmp_path: Path, room: SimRoom, peers: tuple[Orthanc, StoreSCP], dciodvfy: Callable[[Path], None]) -> None:
    orthanc, scp = peers
    clock = Clock()
    with gateway(tmp_path, room, peers, ReviewConfig(hold_s=0, send_rejection_kos=True), clock) as gw:
        ex = armed(gw)
        first, second = expose(ex), expose(ex)
        sent_uid, kept_uid = first.instance.sop_instance_uid, second.instance.sop_instance_uid
        assert {r.outcome for r in gw.forward_due()} == {"sent"}  # sent at once (hold_s = 0)
        ex.review(sent_uid, "rejected", "motion")
        ex.review(sent_uid, "rejected", "motion")  # judged twice: still one note
        ex.review(kept_uid, "accepted")
        third = expose(ex)  # rejected while still queued: withheld, and no note (it never left)
        ex.review(third.instance.sop_instance_uid, "rejected", "artifact")
        results = gw.forward_due()
        kos_uids = {r.uid for r in results}
        assert len(kos_uids) == 1 and {r.destination for r in results} == {"orthanc", "storescp"}
        kos_uid = kos_uids.pop()
        kos_file = Path(gw.spool.deliveries(kos_uid)[0].path)
        dciodvfy(kos_file)
        assert {d.state for d in gw.spool.deliveries(third.instance.sop_instance_uid)} == {DeliveryState.WITHHELD}
        ex.finish()  # its dose report goes; the rejected images still do not
        after_close = gw.forward_due()
        assert after_close and {gw.spool.instance(r.uid).sop_class_uid for r in after_close} == {  # type: ignore[union-attr]
            XRAY_RADIATION_DOSE_SR}
    # the archive's own view: the KOS, in the image's study, flagging the rejected image
    oid = orthanc.find_instance(kos_uid)
    assert oid is not None
    kos = pydicom.dcmread(io.BytesIO(orthanc.instance_file(oid)))
    assert kos.SOPClassUID == KEY_OBJECT_SELECTION and kos.Modality == "KO"
    assert kos.StudyInstanceUID == first.instance.study_instance_uid
    code = kos.ConceptNameCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == \
        ("113001", "DCM", "Rejected for Quality Reasons")
    assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in kos.ContentSequence] == [sent_uid]
    evidence = kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sent_uid
    assert kos_uid in at_storescp(scp)
    assert kept_uid in at_orthanc(orthanc, {kept_uid})
    assert third.instance.sop_instance_uid not in at_storescp(scp)
    assert at_orthanc(orthanc, {third.instance.sop_instance_uid}) == set()


def test_a_destination_answering_again_does_not_release_images_held_for_review(tmp_path: Path) -> None:
    """A backlog released when its archive answers again keeps what is held for a verdict."""
    from gateway.dicom import DX_FOR_PRESENTATION
    from gateway.spool import Spool

    now = [1000.0]
    with Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0, clock=lambda: now[0]) as spool:
        spool.hold_for_review(HOLD_S, frozenset({DX_FOR_PRESENTATION}))
        spool.back_off("pacs", [], retry_at=now[0] + 2 * HOLD_S, error="down", now=now[0])
        spool.put(b"\0" * 128 + b"DICM", sop_instance_uid="1.2.3.1", sop_class_uid=DX_FOR_PRESENTATION,
                  study_instance_uid="1.2.3", accession_number="", destinations=["pacs"])
        now[0] += 1
        spool.release_destination("pacs", now[0])
        assert spool.due("pacs", now[0]) == []  # the archive is back, but the image awaits its verdict
        assert spool.release_held("1.2.3.1") == ["pacs"]
        assert [d.sop_instance_uid for d in spool.due("pacs", now[0])] == ["1.2.3.1"]
        spool.withhold("1.2.3.1", "rejected")
        assert spool.due("pacs", now[0] + 10 * HOLD_S) == []


def test_a_rejected_exposures_for_processing_image_is_held_and_withheld_with_it(
        tmp_path: Path, room: SimRoom, peers: tuple[Orthanc, StoreSCP]) -> None:
    """The verdict is the exposure's: its linear For Processing image (research archive) waits
    for it too, and never leaves when the exposure is rejected."""
    _, scp = peers
    clock = Clock()
    with gateway(tmp_path, room, peers, ReviewConfig(hold_s=HOLD_S), clock, research=True) as gw:
        ex = armed(gw)
        kept, dropped = expose(ex), expose(ex)
        assert kept.processing_uid and dropped.processing_uid
        assert gw.forward_due() == []  # both objects of both exposures wait for the verdict
        ex.review(kept.instance.sop_instance_uid, "accepted")
        ex.review(dropped.instance.sop_instance_uid, "rejected", "patient moved")
        gw.forward_due()
        clock.now += timedelta(seconds=2 * HOLD_S)  # the hold has long passed: nothing of the rejected goes
        ex.finish()
        gw.forward_due()
        received = at_storescp(scp)
        assert {kept.instance.sop_instance_uid, kept.processing_uid} <= received
        assert {dropped.instance.sop_instance_uid, dropped.processing_uid} & received == set()
