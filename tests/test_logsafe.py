"""The log filter alone keeps dataset content from third-party DICOM libraries' records."""

from __future__ import annotations

import logging

import pytest

from gateway import logsafe


def _record(name: str, msg: object, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args,
                             (type(exc), exc, None) if exc is not None else None)


@pytest.mark.parametrize("record", [
    _record("pynetdicom.association", "Failed to decode", exc=ValueError("b'Canary^Secret' at offset 12")),
    _record("pynetdicom.association", ValueError("Canary^Secret")),
    _record("pydicom.dataelem", "%s", ValueError("value 'Canary^Secret' invalid")),
])
def test_exception_texts_are_withheld(record: logging.LogRecord) -> None:
    assert logsafe.PatientDataFilter().filter(record) in (True, False)
    formatted = logging.Formatter("%(message)s").format(record)
    if "Canary" in formatted:
        assert not logsafe.PatientDataFilter().filter(record)  # then it must have been dropped


def test_dataset_dumps_are_dropped_and_other_lines_kept() -> None:
    f = logsafe.PatientDataFilter()
    assert not f.filter(_record("pynetdicom.dsutils", "(0010,0010) PN [Canary^Secret]   # 1 PatientName"))
    assert not f.filter(_record("pynetdicom.association", "%s", "(0010, 0020) Patient ID  LO: 'SECRET'"))
    keep = _record("pynetdicom.association", "Find SCP Response: %d - 0x%04X (Pending)", 3, 0xFF00)
    assert f.filter(keep) and keep.getMessage() == "Find SCP Response: 3 - 0xFF00 (Pending)"
    ours = _record("gateway.app", "(0010,0010) is a tag")  # dxgate's own lines are its own business
    assert f.filter(ours)


def test_install_reaches_every_library_logger() -> None:
    logsafe.install()
    for name in ("pynetdicom", "pynetdicom.association", "pynetdicom.dsutils", "pydicom"):
        assert any(isinstance(flt, logsafe.PatientDataFilter) for flt in logging.getLogger(name).filters), name
