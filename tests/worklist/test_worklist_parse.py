"""Parsing answers as they come off the wire: character sets, several steps, bad codes."""

from __future__ import annotations

import copy
import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from gateway.errors import WorklistError
from gateway.worklist import parse_answer
from tests.worklist.conftest import entry


def on_the_wire(ds: Dataset, *, drop_charset: bool = False) -> Dataset:
    """Encode as a C-FIND identifier (Explicit VR Little Endian) and decode as pynetdicom does.

    With drop_charset the answer loses (0008,0005) but keeps its bytes, as from a server that
    strips the character set (DCMTK wlmscpfs by default).
    """
    back = decode(io.BytesIO(encode(ds, False, True)), False, True)
    if drop_charset:
        del back.SpecificCharacterSet
    return back


def test_latin1_bytes_become_str() -> None:
    ds = on_the_wire(entry(1, patient_name="Müller^Jürgen", charset="ISO_IR 100"))
    assert "ü".encode("latin-1") in ds.get_item("PatientName").value  # really Latin-1 on the wire
    (item,) = parse_answer(ds)
    assert item.patient_name == "Müller^Jürgen"


@pytest.mark.parametrize("name, charset", [("Müller^Jürgen", "ISO_IR 100"), ("Παπαδόπουλος^Νίκος", "ISO_IR 192")])
def test_undeclared_non_ascii_text_is_refused_not_guessed(name: str, charset: str) -> None:
    """Latin-1 and UTF-8 bytes with no Specific Character Set: either guess would be mojibake
    for some RIS (it was: UTF-8 first, else Latin-1), so neither is made."""
    ds = on_the_wire(entry(1, patient_name=name, charset=charset), drop_charset=True)
    with pytest.raises(WorklistError, match="PatientName cannot be decoded with confidence: it holds non-ASCII "
                                            "bytes and no Specific Character Set is declared") as err:
        parse_answer(ds)
    assert name.split("^")[0] not in str(err.value)


def test_undeclared_ascii_text_is_read() -> None:
    (item,) = parse_answer(on_the_wire(entry(1, patient_name="Doe^Jane"), drop_charset=True))
    assert item.patient_name == "Doe^Jane"


def test_one_item_per_scheduled_step() -> None:
    ds = entry(1)
    second = copy.deepcopy(ds.ScheduledProcedureStepSequence[0])
    second.ScheduledProcedureStepID = "SPS1b"
    ds.ScheduledProcedureStepSequence.append(second)
    assert [i.sps_id for i in parse_answer(ds)] == ["SPS1", "SPS1b"]


def test_protocol_code_without_value_is_malformed() -> None:
    ds = entry(1, protocol_codes=[("X", "99L", "x")])
    del ds.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodeValue
    with pytest.raises(WorklistError, match="ScheduledProtocolCodeSequence"):
        parse_answer(ds)


def test_time_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.IGNORE)
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)
    ds = entry(1)
    for raw, expect in [("0930", (9, 30, 0)), ("09", (9, 0, 0)), ("09:30:15", (9, 30, 15)), ("093015.5", (9, 30, 15))]:
        ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime = raw  # ACR-NEMA form too
        start = parse_answer(ds)[0].sps_start
        assert start is not None and (start.hour, start.minute, start.second) == expect
