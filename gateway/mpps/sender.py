"""Sends the MPPS queue to the RIS's MPPS SCP, one message at a time, in order.

A message the RIS accepted (Success or Warning) is done; one it refused (Failure) is kept as
refused with the status, its step stops and an alarm says why; no association (RIS down, aborted,
rejected as busy) retries with backoff. TCP_NODELAY on every association.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from pydicom.dataset import Dataset
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from pynetdicom.status import code_to_category

from gateway.config import MppsConfig
from gateway.mpps.queue import MppsQueue, MppsRecord
from gateway.netopts import ApplicationEntity, nodelay_handlers

LOGGER = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
DUPLICATE_SOP_INSTANCE = 0x0111


class MppsSender:
    def __init__(self, queue: MppsQueue, config: MppsConfig, *, calling_ae: str,
                 on_refused: Callable[[MppsRecord, str], None] = lambda r, why: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.queue, self.config, self.calling_ae = queue, config, calling_ae
        self._on_refused = on_refused
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = 1.0
        self.last_error = ""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dxgate-mpps", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self.queue.wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.queue.wake.clear()
            try:
                while not self._stop.is_set() and self.send_one():
                    pass
            except Exception:  # the sender must not die; the message stays pending
                LOGGER.exception("MPPS sender failed unexpectedly")
            due = self.queue.next_due_at()
            wait = 5.0 if due is None else min(5.0, max(0.05, due - self._clock()))
            self.queue.wake.wait(wait)

    def send_one(self) -> bool:
        """Send the next due message; False when none is due (or the RIS cannot be reached)."""
        rec = self.queue.due(self._clock())
        if rec is None:
            return False
        cfg = self.config
        ae = ApplicationEntity(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.timeout_s
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate(cfg.host, cfg.port, ae_title=cfg.called_ae, evt_handlers=nodelay_handlers())
        if not assoc.is_established:
            self._retry(rec, f"no association with the MPPS SCP {cfg.called_ae}@{cfg.host}:{cfg.port}")
            return False
        try:
            if rec.kind == "create":
                status, _ = assoc.send_n_create(rec.dataset, ModalityPerformedProcedureStep, rec.mpps_uid)
            else:
                status, _ = assoc.send_n_set(rec.dataset, ModalityPerformedProcedureStep, rec.mpps_uid)
        finally:
            assoc.release()
        return self._outcome(rec, status)

    def _outcome(self, rec: MppsRecord, status: Dataset) -> bool:
        if not status or "Status" not in status:  # no answer: aborted or timed out; it may be tried again
            self._retry(rec, f"MPPS N-{rec.kind.upper()} got no answer")
            return False
        code = int(status.Status)
        category = code_to_category(code)
        if rec.kind == "create" and code == DUPLICATE_SOP_INSTANCE:
            # An N-CREATE sent again after its answer was lost: the RIS has the step already.
            LOGGER.warning("MPPS step %s already exists at the RIS (0x0111): taken as created", rec.mpps_uid)
            category = "Success"
        if category in ("Success", "Warning"):
            self.queue.sent(rec.id, code)
            self._backoff = 1.0
            self.last_error = ""
            LOGGER.info("MPPS N-%s of step %s accepted (0x%04X)", rec.kind.upper(), rec.mpps_uid, code)
            return True
        comment = str(status.get("ErrorComment", ""))
        why = f"MPPS N-{rec.kind.upper()} refused by the RIS: 0x{code:04X} {category}" + \
            (f" ({comment})" if comment else "")
        self.queue.refused(rec.id, code, why)
        self.last_error = why
        LOGGER.error("%s; the step's later messages wait for an operator", why)
        self._on_refused(rec, why)
        return True

    def _retry(self, rec: MppsRecord, why: str) -> None:
        delay = self._backoff * random.uniform(0.8, 1.2)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
        self.queue.retry_at(rec.id, self._clock() + delay, why)
        self.last_error = why
        LOGGER.warning("%s; retry in %.0f s", why, delay)
