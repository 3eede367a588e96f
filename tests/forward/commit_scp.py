"""A scripted archive for storage commitment fault tests: a pynetdicom Storage SCP that is also a
Storage Commitment Push Model SCP, reporting on the same association, on a new association to
dxgate's listener, or never; and reporting chosen instances failed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (
    DigitalXRayImageStorageForPresentation,
    SecondaryCaptureImageStorage,
    StorageCommitmentPushModel,
)

from gateway.netopts import nodelay_handlers

PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
NO_SUCH_OBJECT = 0x0112

# fail(nth N-ACTION from 0, SOP Instance UID) -> Failure Reason, or None: committed
Failing = Callable[[int, str], int | None]


def commit_all(_n: int, _uid: str) -> int | None:
    return None


@dataclass
class CommitSCP:
    report: Literal["same", "new", "none"] = "same"
    fail: Failing = commit_all
    aet: str = "COMMITSCP"
    listener: tuple[str, int, str] | None = None  # dxgate's listener (host, port, AE) for report="new"
    port: int = 0
    stored: list[str] = field(default_factory=list)
    stored_bytes: dict[str, list[bytes]] = field(default_factory=dict)  # uid -> every received encoding
    actions: list[tuple[str, list[str]]] = field(default_factory=list)  # (Transaction UID, referenced UIDs)
    report_status: list[int] = field(default_factory=list)  # dxgate's answers to the reports
    reported: threading.Event = field(default_factory=threading.Event)
    asked: threading.Event = field(default_factory=threading.Event)
    associations: int = 0
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> CommitSCP:
        ae = AE(ae_title=self.aet)
        ae.maximum_pdu_size = 131072
        for sop in (DigitalXRayImageStorageForPresentation, SecondaryCaptureImageStorage):
            ae.add_supported_context(sop, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(StorageCommitmentPushModel)
        handlers = nodelay_handlers() + [(evt.EVT_C_STORE, self._on_store), (evt.EVT_N_ACTION, self._on_action),
                                         (evt.EVT_DIMSE_SENT, self._on_sent), (evt.EVT_REQUESTED, self._on_request)]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        return self

    def _on_request(self, _event: Any) -> None:
        with self._lock:
            self.associations += 1

    def _on_store(self, event: Any) -> int:
        ds = event.dataset
        with self._lock:
            self.stored.append(str(ds.SOPInstanceUID))
            self.stored_bytes.setdefault(str(ds.SOPInstanceUID), []).append(bytes(ds.PixelData))
        return 0x0000

    def _on_action(self, event: Any) -> tuple[int, Dataset | None]:
        info = event.action_information
        uids = [str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence]
        with self._lock:
            n = len(self.actions)
            self.actions.append((str(info.TransactionUID), uids))
            event.assoc._pending_report = self._report_dataset(n, info)  # sent after the N-ACTION-RSP
        self.asked.set()
        return 0x0000, None

    def _report_dataset(self, n: int, info: Dataset) -> Dataset:
        ds = Dataset()
        ds.TransactionUID = info.TransactionUID
        ok, failed = [], []
        for ref in info.ReferencedSOPSequence:
            reason = self.fail(n, str(ref.ReferencedSOPInstanceUID))
            item = Dataset()
            item.ReferencedSOPClassUID = ref.ReferencedSOPClassUID
            item.ReferencedSOPInstanceUID = ref.ReferencedSOPInstanceUID
            if reason is None:
                ok.append(item)
            else:
                item.FailureReason = reason
                failed.append(item)
        if ok:
            ds.ReferencedSOPSequence = ok
        if failed:
            ds.FailedSOPSequence = failed
        return ds

    def _on_sent(self, event: Any) -> None:
        if type(event.message).__name__ != "N_ACTION_RSP" or self.report == "none":
            return
        ds = getattr(event.assoc, "_pending_report", None)
        if ds is None:
            return
        event.assoc._pending_report = None
        target = self._same if self.report == "same" else self._new
        t = threading.Thread(target=target, args=(event.assoc, ds), daemon=True)
        self._threads.append(t)
        t.start()

    def _event_type(self, ds: Dataset) -> int:
        return 2 if "FailedSOPSequence" in ds else 1

    def _same(self, assoc: Any, ds: Dataset) -> None:
        status, _ = assoc.send_n_event_report(ds, self._event_type(ds), StorageCommitmentPushModel,
                                              PUSH_MODEL_INSTANCE)
        self._answered(status)

    def _new(self, _assoc: Any, ds: Dataset) -> None:
        assert self.listener is not None
        host, port, aet = self.listener
        ae = AE(ae_title=self.aet)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(host, port, ae_title=aet, evt_handlers=nodelay_handlers())
        if not assoc.is_established:
            return
        try:
            status, _ = assoc.send_n_event_report(ds, self._event_type(ds), StorageCommitmentPushModel,
                                                  PUSH_MODEL_INSTANCE)
            self._answered(status)
        finally:
            assoc.release()

    def _answered(self, status: Dataset) -> None:
        with self._lock:
            self.report_status.append(int(status.Status) if "Status" in status else -1)
        self.reported.set()

    def stop(self) -> None:
        for t in self._threads:
            t.join(10)
        if self._server is not None:
            self._server.shutdown()
            self._server = None
