"""An embedded Modality Worklist SCP for the demo: a small RIS on loopback.

It matches the keys a modality sends (PS3.4 C.2.2.2): single values with * and ? wildcards,
date ranges, and the keys inside the Scheduled Procedure Step Sequence; it answers with the
requested attributes only, each answer in its entry's own Specific Character Set.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.events import EventHandlerType

# pynetdicom makes its SOP class names at import time, where mypy cannot see them
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification  # type: ignore[attr-defined]

from gateway.netopts import nodelay_handlers

LOGGER = logging.getLogger(__name__)

_RANGE_VRS = ("DA", "TM", "DT")
_NOT_MATCHED = ("SpecificCharacterSet",)


class WorklistServer:
    """MWL C-FIND SCP serving `items` (full entries, e.g. from make_worklist_entry)."""

    def __init__(self, items: Seq[Dataset], ae_title: str = "RIS", host: str = "127.0.0.1") -> None:
        self.ae_title = ae_title
        self.host = host
        self._items = [d.copy() for d in items]
        self._lock = threading.Lock()
        self._server: Any = None
        self.queries: list[Dataset] = []  # every identifier received, for tests

    @property
    def items(self) -> list[Dataset]:
        with self._lock:
            return list(self._items)

    @items.setter
    def items(self, items: Seq[Dataset]) -> None:
        with self._lock:
            self._items = [d.copy() for d in items]

    def start(self) -> int:
        """Listen on an ephemeral port; return it."""
        if self._server is not None:
            raise RuntimeError("worklist server already started")
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(ModalityWorklistInformationFind, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_supported_context(Verification)
        ae.require_called_aet = True  # like a real RIS/PACS: a wrong called AE is rejected
        handlers: list[EventHandlerType] = [(evt.EVT_C_FIND, self._on_find), *nodelay_handlers()]
        self._server = ae.start_server((self.host, 0), block=False, evt_handlers=handlers)
        port = int(self._server.server_address[1])
        LOGGER.info("embedded worklist %s listening on %s:%d", self.ae_title, self.host, port)
        return port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> WorklistServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        query: Dataset = event.identifier
        with self._lock:
            self.queries.append(query)
            items = list(self._items)
        for item in items:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            if matches(query, item):
                yield 0xFF00, project(query, item)


def matches(query: Dataset, item: Dataset) -> bool:
    """Whether `item` satisfies every matching key of `query` (empty keys match anything)."""
    for elem in query:
        if elem.keyword in _NOT_MATCHED:
            continue
        if elem.VR == "SQ":
            q_items = list(elem.value or ())
            if not q_items or _is_universal(q_items[0]):
                continue
            if elem.tag not in item or not any(matches(q_items[0], i) for i in item[elem.tag].value):
                return False
            continue
        key = _text(elem)
        if key in ("", "*"):
            continue
        value = _text(item[elem.tag]) if elem.tag in item else ""
        if elem.VR in _RANGE_VRS and "-" in key:
            lo, _, hi = key.partition("-")
            if not value or (lo and value < lo) or (hi and value[: len(hi)] > hi):
                return False
        elif elem.VR == "UI":
            if value not in key.split("\\"):
                return False
        elif not _wildcard(key, value, case_sensitive=elem.VR != "PN"):
            return False
    return True


def project(query: Dataset, item: Dataset) -> Dataset:
    """The answer: every attribute the query asked for, valued from the item (empty if it has none)."""
    out = Dataset()
    if "SpecificCharacterSet" in item:
        out.SpecificCharacterSet = item.SpecificCharacterSet
    for elem in query:
        if elem.keyword == "SpecificCharacterSet":
            continue
        if elem.tag not in item:
            out.add(DataElement(elem.tag, elem.VR, Sequence() if elem.VR == "SQ" else ""))
            continue
        have = item[elem.tag]
        if elem.VR == "SQ" and elem.value and len(elem.value[0]) > 0:
            out.add(DataElement(elem.tag, "SQ", Sequence([project(elem.value[0], i) for i in have.value])))
        else:
            out.add(have)
    return out


def _is_universal(ds: Dataset) -> bool:
    return all(e.VR != "SQ" and _text(e) in ("", "*") for e in ds if e.keyword not in _NOT_MATCHED)


def _text(elem: DataElement) -> str:
    v = elem.value
    if v is None:
        return ""
    if isinstance(v, MultiValue):
        return "\\".join(str(x) for x in v).strip()
    return str(v).strip()


def _wildcard(key: str, value: str, *, case_sensitive: bool) -> bool:
    if not case_sensitive:
        key, value = key.upper(), value.upper()
    if "*" in key or "?" in key:
        return fnmatch.fnmatchcase(value, key.replace("[", "[[]"))
    return key == value
