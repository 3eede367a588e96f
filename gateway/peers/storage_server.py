"""An embedded Storage SCP for the demo: a small PACS on loopback.

Every storage SOP class is accepted in Explicit or Implicit VR Little Endian; each instance is
written, exactly as received, to <directory>/<SOPInstanceUID>.dcm (temporary file, fsync,
rename), before the success status is returned.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import EventHandlerType

# pynetdicom makes its SOP class names at import time, where mypy cannot see them
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.durable import write_atomic
from gateway.netopts import nodelay_handlers
from gateway.uids import is_valid_uid

LOGGER = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


class StorageServer:
    """C-STORE SCP writing what it receives into `directory`."""

    def __init__(self, directory: Path, ae_title: str = "PACS", host: str = "127.0.0.1") -> None:
        self.directory = Path(directory)
        self.ae_title = ae_title
        self.host = host
        self._received: list[Path] = []
        self._cond = threading.Condition()
        self._server: Any = None

    @property
    def received(self) -> list[Path]:
        """Files written so far, in arrival order (a copy: safe to use from any thread)."""
        with self._cond:
            return list(self._received)

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Block until at least `count` instances arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._received) >= count, timeout=timeout_s)

    def start(self, port: int = 0) -> int:
        """Listen on `port` (0: an ephemeral one); return the port."""
        if self._server is not None:
            raise RuntimeError("storage server already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.ae_title)
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is not None:  # always set in pynetdicom's list
                ae.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_supported_context(Verification)
        ae.require_called_aet = True  # like a real RIS/PACS: a wrong called AE is rejected
        ae.maximum_pdu_size = 131072
        handlers: list[EventHandlerType] = [(evt.EVT_C_STORE, self._on_store), *nodelay_handlers()]
        self._server = ae.start_server((self.host, port), block=False, evt_handlers=handlers)
        port = int(self._server.server_address[1])
        LOGGER.info("embedded storage %s listening on %s:%d -> %s", self.ae_title, self.host, port, self.directory)
        return port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> StorageServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID or "")
        if not is_valid_uid(uid):
            LOGGER.warning("refused an instance with an invalid SOP Instance UID")
            return CANNOT_UNDERSTAND
        target = self.directory / f"{uid}.dcm"
        try:
            data = event.encoded_dataset(include_meta=True)
            write_atomic(target, data)
        except OSError as exc:
            LOGGER.error("could not store %s: %s", uid, exc)
            return OUT_OF_RESOURCES
        with self._cond:
            self._received.append(target)
            self._cond.notify_all()
        LOGGER.info("stored %s", uid)
        return SUCCESS
