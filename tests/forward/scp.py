"""A scriptable pynetdicom Storage SCP for fault tests: chosen statuses, aborts, counted associations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation, SecondaryCaptureImageStorage
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from gateway.netopts import nodelay_handlers

# behaviour(n, event) -> status to return, or None to abort the association; n counts C-STOREs from 0
Behaviour = Callable[[int, Any], int | None]


def always(status: int) -> Behaviour:
    return lambda _n, _event: status


def abort_first() -> Behaviour:
    return lambda n, _event: None if n == 0 else 0x0000


@dataclass
class ScriptedSCP:
    behaviour: Behaviour = field(default_factory=lambda: always(0x0000))
    port: int = 0
    aet: str = "TESTSCP"
    require_called_aet: bool = False
    transfer_syntaxes: list[str] = field(default_factory=lambda: list(ALL_TRANSFER_SYNTAXES))
    max_associations: int = 10  # more at once are rejected (transient, local limit exceeded)
    associations: int = 0
    stores: int = 0
    stored: list[str] = field(default_factory=list)  # SOP Instance UIDs answered with success/warning
    datasets: list[Dataset] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ScriptedSCP:
        ae = AE(ae_title=self.aet)
        ae.require_called_aet = self.require_called_aet
        ae.maximum_pdu_size = 131072
        ae.maximum_associations = self.max_associations
        for sop in (DigitalXRayImageStorageForPresentation, SecondaryCaptureImageStorage):
            ae.add_supported_context(sop, self.transfer_syntaxes)
        handlers = nodelay_handlers() + [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REQUESTED, self._on_request)]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        return self

    def _on_request(self, _event: Any) -> None:
        with self._lock:
            self.associations += 1

    def _on_store(self, event: Any) -> int:
        with self._lock:
            n = self.stores
            self.stores += 1
        status = self.behaviour(n, event)
        if status is None:
            event.assoc.abort()
            return 0xC000  # never reaches the SCU: the association is gone
        if code_to_category(status) in (STATUS_SUCCESS, STATUS_WARNING):  # what the archive keeps
            ds = event.dataset
            ds.file_meta = event.file_meta
            with self._lock:
                self.stored.append(str(ds.SOPInstanceUID))
                self.datasets.append(ds)
            self.received.set()
        return status

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
