"""A hostile RIS: malformed and endless answers, hostile values, and what reaches the logs.

Each server here is written for the test (pynetdicom on 127.0.0.1); canary patient data in
its answers must never appear in any log record of any logger, and the good answers must be
kept when one is broken.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom.service_class
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import encode as real_encode

from gateway.config import Config, WorklistConfig
from gateway.errors import WorklistError
from gateway.peers import WorklistServer
from gateway.worklist import load_cache, parse_answer, query_worklist_result, save_cache
from gateway.worklist_service import WorklistService
from tests.worklist.conftest import DAY, START, STATION, entry

CANARIES = ("Canary^Secret", "SECRETID42", "19330303", "ACCSECRET9")


def canary_entry() -> Dataset:
    return entry(9, patient_name=CANARIES[0], patient_id=CANARIES[1], birth_date=CANARIES[2], accession=CANARIES[3])


def ask(server: Any, **kw: Any) -> Any:
    args: dict[str, Any] = dict(host="127.0.0.1", port=server.port, called_ae=server.ae_title, calling_ae=STATION,
                                station_ae=STATION, on=DAY, timeout_s=5.0)
    args.update(kw)
    return query_worklist_result(**args)


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[WorklistServer] = []

    def start(server: WorklistServer) -> WorklistServer:
        server.port = server.start()  # type: ignore[attr-defined]
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def every_log_line() -> Iterator[list[str]]:
    """Every formatted record of every logger (tracebacks included), at DEBUG."""
    handler = _Everything()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def test_an_undecodable_answer_is_skipped_and_no_patient_data_reaches_any_log(
        serve: Any, every_log_line: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer's bytes end inside an item: pynetdicom cannot decode them and says so."""
    def broken_encode(ds: Dataset, *args: Any, **kwargs: Any) -> bytes | None:
        data = real_encode(ds, *args, **kwargs)
        if data is not None and CANARIES[1].encode() in data:
            data += b"\x10\x00\x10\x11SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\xff\xff\xff\xff" \
                    + b"\x10\x00\x10\x00PN\x0e\x00" + CANARIES[0].encode() + b" "
        return data

    monkeypatch.setattr(pynetdicom.service_class, "encode", broken_encode)
    server = serve(WorklistServer([entry(1), canary_entry(), entry(2)], ae_title="RIS"))
    result = ask(server, patient_id="")
    assert [i.accession_number for i in result.items] == ["A1", "A2"]  # the good answers are kept
    assert result.skipped == ("answer 2: the identifier could not be decoded",)
    searched = ask(server, patient_id=CANARIES[1])  # the canary as a query key, too
    assert searched.items == ()
    text = "\n".join(every_log_line)
    assert "could not be decoded" in text  # the event itself is logged ...
    for canary in CANARIES:
        assert canary not in text, f"{canary} reached the logs"  # ... its data is not


class EndlessServer(WorklistServer):
    """Pending answers with no end in sight for the client (a broken RIS in a loop); the server
    itself gives up after 8 s so that it can be stopped (its thread cannot see the client's abort
    while it is busy yielding)."""

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        n, until = 0, time.monotonic() + 8.0
        while not event.is_cancelled and event.assoc.is_established and time.monotonic() < until:
            n += 1
            yield 0xFF00, entry(n % 50 + 1)


def test_an_endless_pending_stream_is_bounded_in_time(serve: Any) -> None:
    server = serve(EndlessServer([], ae_title="ENDLESS"))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(WorklistError, match=r"took longer than 1s in all; ended after \d+ answers"):
        ask(server, max_query_s=1.0, max_answers=1_000_000)
    # ended by the bound, not by the server: well before "forever" (the bug ran 88 s past its
    # timeout), with room for an abort's own network timeout on a loaded machine
    assert time.monotonic() - started < 1.0 + 2 * 5.0 + 10.0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 200


def test_too_many_answers_end_the_query(serve: Any) -> None:
    server = serve(EndlessServer([], ae_title="ENDLESS"))
    with pytest.raises(WorklistError, match="more than 25 answers; query ended"):
        ask(server, max_query_s=60.0, max_answers=25)


def _with(ds: Dataset, keyword: str, value: Any, in_sps: bool = False) -> Dataset:
    ds = ds.copy()
    target = ds.ScheduledProcedureStepSequence[0] if in_sps else ds
    setattr(target, keyword, value)
    return ds


@pytest.mark.parametrize("keyword, value, reason", [
    ("PatientName", "A" * 60000, "PatientName is not a valid person name"),  # ~64 KB: near the 16-bit length
    ("PatientName", "Doe^Jane\nDROP TABLE", "PatientName holds control characters"),
    ("PatientName", "\x1b$)CDoe", "PatientName cannot be decoded with confidence: it holds an escape sequence"),
    ("PatientID", ["ID1", "ID2"], "PatientID has 2 values; it allows one"),
    ("PatientID", "X" * 65, "PatientID is 65 characters long; LO allows 64"),
    ("AccessionNumber", "A" * 17, "AccessionNumber is 17 characters long; SH allows 16"),
    ("RequestedProcedureDescription", "Thorax\tp.a.", "RequestedProcedureDescription holds control characters"),
])
def test_values_that_would_make_an_invalid_object_refuse_that_item(serve: Any, keyword: str, value: Any,
                                                                    reason: str) -> None:
    with pydicom.config.disable_value_validation():  # the RIS does not validate what it sends either
        bad = _with(canary_entry(), keyword, value)
        server = serve(SloppyServer([entry(1), bad], ae_title="SLOPPY"))
        result = ask(server)
    assert [i.accession_number for i in result.items] == ["A1"]
    assert len(result.skipped) == 1 and reason in result.skipped[0], result.skipped
    assert not any(c in result.skipped[0] for c in CANARIES)


class SloppyServer(WorklistServer):
    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        for item in self.items:
            yield 0xFF00, item


def test_a_refresh_where_every_answer_is_malformed_keeps_the_cache(serve: Any, tmp_path: Path) -> None:
    good = serve(SloppyServer([entry(1), entry(2)], ae_title="RIS"))
    config = Config(state_dir=str(tmp_path), worklist=WorklistConfig(port=good.port, called_ae="RIS",
                                                                     timeout_s=5.0))
    service = WorklistService(config, clock=lambda: __import__("datetime").datetime.combine(DAY, START.time()))
    assert [i.accession_number for i in service.worklist().items] == ["A1", "A2"]
    cache = config.path(config.worklist.cache)
    before = cache.read_bytes()
    with pydicom.config.disable_value_validation():
        broken = serve(SloppyServer([_with(entry(3), "PatientID", ["X", "Y"]), _with(entry(4), "PatientName",
                                                                                       "\x1b$)C")],
                                    ae_title="RIS"))
    service.reconfigure(config.model_copy(update={"worklist": config.worklist.model_copy(
        update={"port": broken.port})}))
    view = service.worklist()
    assert view.items == [] and view.source == "ris"
    assert cache.read_bytes() == before  # the offline copy still holds the day's two entries
    assert [i.accession_number for i in load_cache(cache)] == ["A1", "A2"]


def test_an_empty_day_does_replace_the_cache(tmp_path: Path) -> None:
    """An answer with no entry and no broken one is a real empty day, and is cached as such."""
    from gateway.worklist import QueryResult, should_replace_cache
    assert should_replace_cache(QueryResult(items=(), answers=0, skipped=(), filtered_out=0))
    assert not should_replace_cache(QueryResult(items=(), answers=2, skipped=("a", "b"), filtered_out=0))
    save_cache([], tmp_path / "c.json")
    assert load_cache(tmp_path / "c.json") == []


# --- the parser, for any input -----------------------------------------------------------------

_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
_VALUE = st.one_of(_TEXT, st.lists(_TEXT, min_size=2, max_size=3), st.none())
_KEYWORDS = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyInstanceUID",
             "RequestedProcedureID", "RequestedProcedureDescription", "ReferringPhysicianName", "IssuerOfPatientID"]
_SPS_KEYWORDS = ["ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime", "Modality",
                 "ScheduledStationAETitle", "ScheduledProcedureStepID", "ScheduledProcedureStepDescription"]


@st.composite
def answers(draw: st.DrawFn) -> Dataset:
    ds = entry(draw(st.integers(1, 99)))
    with pydicom.config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the RIS sends what it sends; pydicom's opinion comes at parse time
        for keyword in draw(st.lists(st.sampled_from(_KEYWORDS), max_size=4, unique=True)):
            value = draw(_VALUE)
            if value is None:
                ds.pop(keyword, None)
            else:
                setattr(ds, keyword, value)
        sps = ds.ScheduledProcedureStepSequence[0]
        for keyword in draw(st.lists(st.sampled_from(_SPS_KEYWORDS), max_size=3, unique=True)):
            value = draw(_VALUE)
            if value is None:
                sps.pop(keyword, None)
            else:
                setattr(sps, keyword, value)
        if draw(st.booleans()):
            ds.ScheduledProcedureStepSequence = Sequence([])
        if draw(st.booleans()):
            ds.SpecificCharacterSet = draw(st.sampled_from(["ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 149",
                                                           "GB18030", "NONSENSE"]))
    return ds


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers())
def test_the_parser_never_crashes_and_every_item_it_returns_is_writable(ds: Dataset) -> None:
    with pydicom.config.disable_value_validation():
        try:
            items = parse_answer(ds)
        except WorklistError as exc:
            assert not any(c in str(exc) for c in CANARIES)
            return
    for item in items:
        for name, value in vars(item).items():
            if isinstance(value, str):
                assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value), name
        assert len(item.patient_id) <= 64 and "\\" not in item.patient_id
        assert len(item.accession_number) <= 16
        assert all(len(g) <= 64 for g in item.patient_name.split("="))
        assert item.study_instance_uid and len(item.study_instance_uid) <= 64


def test_a_worklist_thread_does_not_linger(serve: Any) -> None:
    server = serve(EndlessServer([], ae_title="ENDLESS"))
    before = threading.active_count()
    with pytest.raises(WorklistError):
        ask(server, max_query_s=0.5)
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)  # pynetdicom's reactor thread ends asynchronously after the abort
    assert threading.active_count() <= before
