"""The review hold by default, per destination, and the retention of rejected images (issue 11).

With the default `[review]` an image waits for the technologist's verdict: a rejected one never
reaches the archive (DCMTK storescp's own files are the truth), an accepted one goes at once.
A destination with `review_hold = false` receives before the verdict and, with its own
`send_rejection_kos`, is told of a rejection by a KOS. A rejected file goes after
`keep_rejected_days`; its reject-analysis record stays. The gateway clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
)
from gateway.dicom import XRAY_RADIATION_DOSE_SR
from gateway.dicom.kos import KEY_OBJECT_SELECTION
from gateway.rejection import apply_verdict
from gateway.spool import DeliveryState, Spool
from hw_sim.room import SimRoom
from tests.peers import StoreSCP
from tests.review_steps import Clock, armed, expose
from tests.spool.objects import make_object, put


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StoreSCP, StoreSCP]]:
    clinical = StoreSCP(tmp_path_factory.mktemp("clinical"), aet="CLINICAL").start()
    try:
        research = StoreSCP(tmp_path_factory.mktemp("research"), aet="RESEARCH").start()
        try:
            yield clinical, research
        finally:
            research.stop()
    finally:
        clinical.stop()


@pytest.fixture
def room() -> Iterator[SimRoom]:
    with SimRoom(seed=11) as sim:
        yield sim


def gateway(tmp_path: Path, room: SimRoom, clock: Clock, *destinations: DestinationConfig) -> Gateway:
    """The default [review] section: nothing about the hold is configured."""
    config = Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode="8x8"),
                    generator=GeneratorConfig(port=room.start_generator()),
                    calibration=CalibrationConfig(dark_frames=4, flat_frames=4), destinations=destinations)
    gw = Gateway(config, usb_backend=room.usb_backend(), clock=clock)
    gw.calibrate()
    room.place("chest")
    return gw


def received(scp: StoreSCP) -> dict[str, str]:
    """SOP Instance UID -> SOP Class UID of every file the archive wrote."""
    out = {}
    for p in scp.files():
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = str(ds.SOPClassUID)
    return out


def test_by_default_a_rejected_image_never_reaches_the_archive_and_an_accepted_one_goes_at_once(
        tmp_path: Path, room: SimRoom, archives: tuple[StoreSCP, StoreSCP]) -> None:
    clinical, _ = archives
    clock = Clock()
    hold_s = Config().review.hold_s
    with gateway(tmp_path, room, clock, DestinationConfig(name="pacs", port=clinical.port,
                                                          called_ae=clinical.aet)) as gw:
        ex = armed(gw)
        accepted, rejected, unjudged = (expose(ex).instance.sop_instance_uid for _ in range(3))
        ours = {accepted, rejected, unjudged}
        assert gw.forward_due() == []  # saved and queued, but nothing leaves before a verdict
        assert received(clinical).keys() & ours == set()

        ex.review(accepted, "accepted")
        ex.review(rejected, "rejected", "positioning")
        assert [(r.uid, r.outcome) for r in gw.forward_due()] == [(accepted, "sent")]  # at once

        clock.now += timedelta(seconds=hold_s - 1)
        assert gw.forward_due() == []  # the unjudged one waits the whole hold
        clock.now += timedelta(seconds=2)
        assert [(r.uid, r.outcome) for r in gw.forward_due()] == [(unjudged, "sent")]  # then goes as accepted
        clock.now += timedelta(days=1)
        ex.finish()
        assert {gw.spool.instance(r.uid).sop_class_uid for r in gw.forward_due()} == {  # type: ignore[union-attr]
            XRAY_RADIATION_DOSE_SR}  # the exam's dose report; the rejected image still not
        assert {d.state for d in gw.spool.deliveries(rejected)} == {DeliveryState.WITHHELD}

        # retention: kept keep_rejected_days for reject analysis, then deleted; its record stays
        rejected_file = Path(gw.spool.deliveries(rejected)[0].path)
        clock.now += timedelta(days=Config().review.keep_rejected_days - 2)
        assert rejected not in gw.forwarder.retain() and rejected_file.is_file()
        clock.now += timedelta(days=2)
        assert rejected in gw.forwarder.retain() and not rejected_file.exists()
        assert gw.spool.rejected_files_removed == 1
        records = {r.sop_instance_uid: r for r in gw.exams.review_log.records()}
        assert records[rejected].status == "rejected" and records[rejected].reason == "positioning"
        assert records[accepted].status == "accepted"
    at_archive = received(clinical)
    assert at_archive.keys() & ours == {accepted, unjudged}
    assert KEY_OBJECT_SELECTION not in at_archive.values()  # it never left: nothing to withdraw


def test_a_destination_without_review_hold_receives_before_the_verdict(
        tmp_path: Path, room: SimRoom, archives: tuple[StoreSCP, StoreSCP],
        dciodvfy: Callable[[Path], None]) -> None:
    clinical, research = archives
    clock = Clock()
    with gateway(tmp_path, room, clock,
                 DestinationConfig(name="pacs", port=clinical.port, called_ae=clinical.aet),
                 DestinationConfig(name="research", port=research.port, called_ae=research.aet, review_hold=False,
                                   send_rejection_kos=True)) as gw:
        assert gw.config.review.send_rejection_kos is False  # the note is the research archive's own choice
        ex = armed(gw)
        kept, dropped = (expose(ex).instance.sop_instance_uid for _ in range(2))
        assert sorted((r.uid, r.destination, r.outcome) for r in gw.forward_due()) == sorted(
            [(kept, "research", "sent"), (dropped, "research", "sent")])  # before any verdict
        assert received(research).keys() >= {kept, dropped}
        assert received(clinical).keys() & {kept, dropped} == set()

        ex.review(dropped, "rejected", "motion")
        ex.review(kept, "accepted")
        results = gw.forward_due()
        notes = {r.uid for r in results if r.uid not in (kept, dropped)}
        assert {(r.uid, r.destination) for r in results if r.uid in (kept, dropped)} == {(kept, "pacs")}
        assert len(notes) == 1 and {r.destination for r in results if r.uid in notes} == {"research"}
        note = notes.pop()
        dciodvfy(Path(gw.spool.deliveries(note)[0].path))
        clock.now += timedelta(days=1)
        assert gw.forward_due() == []  # the rejected image never goes to the holding archive
    at_clinical, at_research = received(clinical), received(research)
    assert at_clinical.keys() & {kept, dropped, note} == {kept}
    assert at_research[note] == KEY_OBJECT_SELECTION
    kos = pydicom.dcmread(next(p for p in research.files() if pydicom.dcmread(p, stop_before_pixels=True)
                               .SOPInstanceUID == note))
    assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in kos.ContentSequence] == [dropped]


@pytest.mark.parametrize(("review_kos", "own", "noted"), [
    (True, {"b": False}, ["a"]),  # a destination opts out of the [review] note
    (False, {"b": True}, ["b"]),  # or in, where [review] sends none
    (True, {}, ["a", "b"]),  # unset: the [review] setting
    (False, {}, []),
])
def test_send_rejection_kos_per_destination_defaults_to_the_review_setting(
        tmp_path: Path, review_kos: bool, own: dict[str, bool], noted: list[str]) -> None:
    config = Config(state_dir=str(tmp_path), review=ReviewConfig(send_rejection_kos=review_kos),
                    destinations=tuple(DestinationConfig(name=n, send_rejection_kos=own.get(n)) for n in ("a", "b")))
    with Spool(tmp_path / "spool", tmp_path / "state.db", min_free_bytes=0) as spool:
        o = make_object(seed=40)
        put(spool, o, ("a", "b"))
        for d in ("a", "b"):  # it left for both
            spool.mark_sending(d, [o.sop_instance_uid], 1000.0)
            spool.mark_sent(o.sop_instance_uid, d, 0, 1000.0)
        outcome = apply_verdict(spool, config, o.sop_instance_uid, "rejected", datetime.now(UTC))
        assert sorted(outcome.left) == ["a", "b"]
        if noted:
            kos = spool.instance(outcome.kos_uid)
            assert kos is not None and kos.sop_class_uid == KEY_OBJECT_SELECTION
            assert sorted(kos.destinations) == noted
        else:
            assert outcome.kos_uid == ""
