"""No patient data in logs, from every library dxgate uses — not only from its own lines.

pynetdicom logs C-FIND identifiers (patient names, IDs, birth dates) at INFO unless told not
to, and logs whole exceptions (whose text may quote a dataset's bytes) when an answer cannot
be decoded; pydicom's messages may quote element values. `install()` switches pynetdicom's
identifier logging off and puts a filter on every pynetdicom and pydicom logger that
withholds exception texts and drops dataset dumps.
"""

from __future__ import annotations

import logging
import re

_LIBRARIES = ("pynetdicom", "pydicom")
# "(0010,0010) PN ..." / "(0010, 0010) Patient's Name  PN: ..." lines of a dataset dump
_DATASET_LINE = re.compile(r"\(\s*[0-9A-Fa-f]{4}\s*,\s*[0-9A-Fa-f]{4}\s*\)")
_WITHHELD = "details withheld: they may hold patient data"


class PatientDataFilter(logging.Filter):
    """Withholds what a DICOM library's record could carry of a dataset; keeps the event."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_LIBRARIES):
            return True
        if isinstance(record.msg, BaseException):
            record.msg, record.args = f"{type(record.msg).__name__} ({_WITHHELD})", ()
        if isinstance(record.args, tuple) and any(isinstance(a, BaseException) for a in record.args):
            record.args = tuple(f"{type(a).__name__} ({_WITHHELD})" if isinstance(a, BaseException) else a
                                for a in record.args)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg, record.args = f"{_safe(record)} [{type(exc).__name__}; {_WITHHELD}]", ()
            record.exc_info, record.exc_text = None, None
        return not _DATASET_LINE.search(_safe(record))


def _safe(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a malformed record: keep none of its arguments
        return str(record.msg)


_FILTER = PatientDataFilter()


def install() -> None:
    """Idempotent: filter every pynetdicom/pydicom logger that exists now, and the root handlers."""
    import importlib

    for module in ("pydicom", "pynetdicom", "pynetdicom.association", "pynetdicom.dsutils", "pynetdicom.dimse",
                   "pynetdicom.dul", "pynetdicom.acse", "pynetdicom.service_class", "pynetdicom.transport",
                   "pynetdicom._handlers", "pynetdicom.ae"):
        importlib.import_module(module)  # their loggers exist once imported

    manager = logging.Logger.manager
    names = [n for n in list(manager.loggerDict) if n.split(".")[0] in _LIBRARIES] + list(_LIBRARIES)
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
