"""One C-STORE association to one destination, and the checks before an object goes out.

Every association gets TCP_NODELAY (gateway.netopts), the configured max PDU and, per SOP
class, a presentation context offering Explicit VR Little Endian first and Implicit VR
Little Endian second; a file stored in another (lossless) syntax gets its own context. A
destination with a lossless `transfer_syntax` also gets, per SOP class, a context offering
that syntax: when the archive accepts it, each image is compressed in memory at send time
(the spool keeps the original; the SOP Instance UID stays), else it goes uncompressed.

A file sent in its stored transfer syntax goes straight from disk to the socket
(gateway.forward.pdata), pynetdicom still negotiating and reading the responses; under TLS,
and for compressed or converted images, pynetdicom sends it.

With `tls`, the association runs over TLS 1.2+ (gateway.forward.tls); a failed handshake
is an AssociationFailed naming it (`tls_error`), retried with the destination's backoff.
"""

from __future__ import annotations

import io
import logging
import socket
import ssl
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext

from gateway.config import DestinationConfig
from gateway.errors import ForwardError
from gateway.forward import pdata, tls
from gateway.forward.status import Verdict, classify_rejection, classify_transport
from gateway.netopts import ApplicationEntity, nodelay_handlers, socket_nodelay
from gateway.spool import Delivery, files

LOGGER = logging.getLogger(__name__)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_CONTEXTS = 128
COMPRESSED = {"jpeg-ls-lossless": JPEGLSLossless, "jpeg2000-lossless": JPEG2000Lossless, "rle": RLELossless}


def wanted_syntax(destination: DestinationConfig) -> str | None:
    """The lossless syntax a destination asks for; None: uncompressed."""
    return COMPRESSED.get(destination.transfer_syntax)


class AssociationFailed(ForwardError):
    """No association with a destination; `verdict` says whether to retry."""

    def __init__(self, verdict: Verdict, tls_error: str | None = None) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict
        self.tls_error = tls_error  # the TLS handshake failed: why


class ObjectRefused(ForwardError):
    """This object cannot go to this destination (corrupt file, no accepted context)."""


def file_meta(path: str) -> pdata.FileMeta:
    """A spooled file's File Meta Information (ObjectRefused: unreadable, or not Part-10)."""
    try:
        with open(path, "rb") as fh:
            return pdata.read_meta(fh)
    except (OSError, pdata.FileMismatch) as exc:
        raise ObjectRefused(f"spool file {path} is unreadable: {exc}") from exc


def transfer_syntax_of(delivery: Delivery) -> str:
    """The transfer syntax of a spooled file, read from its file meta only."""
    ts = file_meta(delivery.path).transfer_syntax
    if not ts:
        raise ObjectRefused(f"spool file {delivery.path} has no Transfer Syntax UID")
    return ts


def verify(delivery: Delivery) -> bytes:
    """A spooled file's bytes, read once and checked against the size and digest committed with
    it (its xxh3_128, or its sha256 for rows spooled before that was recorded) and its UID (its
    file meta's): what pynetdicom's path sends is these bytes, never a second read of the file."""
    try:
        data = Path(delivery.path).read_bytes()
    except OSError as exc:
        raise ObjectRefused(f"spool file {delivery.path} is unreadable: {exc}") from exc
    wrong = "size" if len(data) != delivery.size else files.data_mismatch(data, delivery.sha256, delivery.xxh3_128)
    if wrong is not None:
        raise ObjectRefused(f"spool file {delivery.path} does not match the {wrong} committed with it (its "
                            f"content identity is sha256 {delivery.sha256[:12]}…); it is corrupt and is not sent")
    try:
        meta = pdata.read_meta(io.BytesIO(data))
    except pdata.FileMismatch as exc:
        raise ObjectRefused(f"spool file {delivery.path} is not valid DICOM: {exc}") from exc
    if meta.sop_instance_uid != delivery.sop_instance_uid:
        raise ObjectRefused(f"spool file {delivery.path} holds SOP Instance UID {meta.sop_instance_uid}, "
                            f"not {delivery.sop_instance_uid}")
    return data


def build_contexts(pairs: Iterable[tuple[str, str]], compress: str | None = None) -> list[PresentationContext]:
    """Presentation contexts for (SOP class, transfer syntax) pairs; with `compress`, a
    context offering that syntax for each SOP class sent uncompressed, besides the
    uncompressed one (the fallback)."""
    wanted = sorted(set(pairs))
    contexts = [build_context(sop, list(UNCOMPRESSED)) for sop in sorted({sop for sop, _ in wanted})]
    contexts += [build_context(sop, ts) for sop, ts in wanted if ts not in UNCOMPRESSED]
    if compress is not None:
        contexts += [build_context(sop, compress) for sop in sorted({sop for sop, ts in wanted if ts in UNCOMPRESSED})
                     if (sop, compress) not in wanted]
    if len(contexts) > MAX_CONTEXTS:
        raise ForwardError(f"{len(contexts)} presentation contexts needed; an association holds {MAX_CONTEXTS}")
    return contexts


class Attempt:
    """The associations one destination's worker has open or is opening (one per parallel
    association), so that another thread can cut them short (shutdown): each socket is shut
    down, which makes pynetdicom end a wait for A-ASSOCIATE-AC or for a C-STORE response at
    once, as an abort.

    A TCP connect still in progress is not interrupted; the connection timeout bounds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assocs: set[Association] = set()
        self.cancelled = False

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_CONN_OPEN, self._opened), (evt.EVT_CONN_CLOSE, self._closed)]

    def _opened(self, event: evt.Event) -> None:
        with self._lock:
            self._assocs.add(event.assoc)
            cancelled = self.cancelled
        if cancelled:
            _shut(event.assoc)

    def _closed(self, event: evt.Event) -> None:
        with self._lock:
            self._assocs.discard(event.assoc)

    def cancel(self) -> None:
        """Cut every association short, now and as soon as one opens (idempotent)."""
        with self._lock:
            self.cancelled = True
            assocs = list(self._assocs)
        for assoc in assocs:
            _shut(assoc)


def _shut(assoc: Association) -> None:
    transport = assoc.dul.socket
    sock = None if transport is None else transport.socket
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected (any more): nothing to cut


@dataclass(frozen=True)
class StoreReply:
    status: int | None  # None: no response (abort, timeout, connection lost)


class Session:
    """An established association to one destination."""

    def __init__(self, assoc: Association, destination: DestinationConfig) -> None:
        self._assoc = assoc
        self.destination = destination
        self.nodelay = socket_nodelay(assoc)
        self._msg_id = 0
        # (SOP class, transfer syntax) -> presentation context ID the archive accepted: fixed for the association
        self._contexts = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])): int(cx.context_id or 0)
                          for cx in assoc.accepted_contexts}
        self._accepted = set(self._contexts)
        self._pdata = fast_sender(assoc, destination)
        self.refused_last = False  # the last store refused its file and aborted the association to do so

    @property
    def established(self) -> bool:
        return bool(self._assoc.is_established)

    @property
    def fast(self) -> bool:
        """Whether stored files go straight from disk to the socket (gateway.forward.pdata)."""
        return self._pdata is not None

    def store(self, delivery: Delivery, transfer_syntax: str) -> StoreReply:
        """Check a spool file against what the spool committed (ObjectRefused if it does not
        match) and send it: compressed in memory when the destination asks for a lossless
        syntax the archive accepted; else, when the archive accepted its transfer syntax, as it
        is stored (no decode, no re-encode), straight from disk over the socket when the
        association allows it (gateway.forward.pdata: not under TLS), else through pynetdicom;
        else decoded and converted."""
        self._msg_id = self._msg_id % 0xFFFF + 1
        target = wanted_syntax(self.destination)
        compress = (target is not None and transfer_syntax in UNCOMPRESSED
                    and (delivery.sop_class_uid, target) in self._accepted)
        context_id = self._contexts.get((delivery.sop_class_uid, transfer_syntax))
        if self._pdata is not None and not compress and context_id is not None:
            expected = pdata.Expected(delivery.size, delivery.sha256, delivery.sop_instance_uid, delivery.xxh3_128)
            self.refused_last = False
            try:
                status = self._pdata.store(delivery.path, expected, context_id, self._msg_id, delivery.sop_class_uid)
            except pdata.FileMismatch as exc:
                self.refused_last = not self.established
                raise ObjectRefused(str(exc)) from exc
            return StoreReply(status)
        data = verify(delivery)  # sent are these bytes, as pynetdicom would read the file
        item = compressed(data, delivery, target, self.destination.name) if compress and target is not None \
            else dcmread(io.BytesIO(data))
        try:
            rsp = self._assoc.send_c_store(item, msg_id=self._msg_id)
        except ValueError as exc:  # no accepted presentation context for this object
            raise ObjectRefused(f"{self.destination.name} accepted no presentation context for "
                                f"{delivery.sop_class_uid} in {transfer_syntax}: {exc}") from exc
        except RuntimeError:  # the association went away between checks
            return StoreReply(None)
        status = rsp.get("Status")
        return StoreReply(None if status is None else int(status))

    def n_action(self, dataset: Dataset, action_type: int, sop_class: str, sop_instance: str) -> int | None:
        """Send an N-ACTION; its response status, None without one (or without a context for it)."""
        self._msg_id = self._msg_id % 0xFFFF + 1
        if self._pdata is not None:
            self._pdata.resume()
        try:
            status, _reply = self._assoc.send_n_action(dataset, action_type, sop_class, sop_instance,
                                                       msg_id=self._msg_id)
        except (ValueError, RuntimeError) as exc:  # no accepted context, or the association went away
            LOGGER.warning("%s: N-ACTION not sent: %s", self.destination.name, exc)
            return None
        value = status.get("Status") if status else None
        return None if value is None else int(value)

    def release(self) -> None:
        if self._pdata is not None:
            self._pdata.resume()
        if self._assoc.is_established:
            self._assoc.release()


def fast_sender(assoc: Association, destination: DestinationConfig) -> pdata.PDataSender | None:
    """The direct P-DATA sender for an association, None where pynetdicom's path stays: under
    TLS (the socket is shared with pynetdicom's reading thread, which an SSL socket does not
    allow)."""
    transport = assoc.dul.socket
    sock = None if transport is None else transport.socket
    if destination.tls or sock is None or isinstance(sock, ssl.SSLSocket):
        return None
    return pdata.PDataSender(assoc, sock, destination.timeout_s)


def compressed(data: bytes, delivery: Delivery, syntax: str, destination: str) -> Dataset:
    """The spooled image (its checked bytes `data`) compressed losslessly in memory (same SOP
    Instance UID), checked by decoding it again; uncompressed as it is when it has no pixels,
    the encoder refuses it, or the decoded pixels are not the original bit for bit."""
    ds = dcmread(io.BytesIO(data))
    if "PixelData" not in ds:
        return ds
    try:
        original = stored_values(ds)
        ds.compress(syntax, generate_instance_uid=False)
        same = bool(np.array_equal(decode(ds), original))
    except Exception as exc:  # pydicom's encoders raise several types; the fallback is always safe
        why = f"{type(exc).__name__}: {exc}"
    else:
        if same:
            return ds
        why = "the decoded pixels differ from the original"
    LOGGER.warning("%s: %s not compressed to %s (%s); sent uncompressed", destination,
                   delivery.sop_instance_uid, syntax, why)
    return dcmread(io.BytesIO(data))


def stored_values(ds: Dataset) -> np.ndarray:
    """The pixel values as the uncompressed file holds them, unused high bits included
    (pydicom's pixel_array masks them to Bits Stored)."""
    arr = ds.pixel_array
    native = ds.BitsAllocated in (8, 16) and arr.dtype.itemsize * 8 == ds.BitsAllocated
    if native and ds.get("PixelRepresentation", 0) == 0:
        return np.frombuffer(ds.PixelData, dtype=f"<u{arr.dtype.itemsize}", count=arr.size).reshape(arr.shape)
    return arr


def decode(ds: Dataset) -> np.ndarray:
    """The pixels of an encoded dataset, decoded from its bytes as an archive would."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return dcmread(io.BytesIO(buf.getvalue())).pixel_array


def _tls_args(destination: DestinationConfig, watch: tls.HandshakeWatch, where: str) -> tuple[ssl.SSLContext, str]:
    try:
        ctx = tls.client_context(ca_file=destination.tls_ca_file, cert_file=destination.tls_cert_file,
                                 key_file=destination.tls_key_file, watch=watch)
    except ForwardError as exc:
        raise AssociationFailed(classify_transport(f"{where}: {exc}"), tls_error=str(exc)) from exc
    return ctx, destination.host


def open_session(destination: DestinationConfig, calling_ae: str, contexts: Sequence[PresentationContext],
                 extra_handlers: Sequence[EventHandlerType] = (), attempt: Attempt | None = None) -> Session:
    """Associate with a destination, or raise AssociationFailed with a retry/quarantine verdict.

    Every network wait is bounded by the destination's timeout_s (TCP connect, A-ASSOCIATE,
    each DIMSE response, network idle); `attempt` lets another thread cut it shorter."""
    where = f"{destination.name} ({destination.called_ae}@{destination.host}:{destination.port})"
    if attempt is not None and attempt.cancelled:
        raise AssociationFailed(classify_transport(f"{where}: not associating, shutting down"))
    ae = ApplicationEntity(ae_title=calling_ae)
    ae.acse_timeout = destination.timeout_s
    ae.dimse_timeout = destination.timeout_s
    ae.network_timeout = destination.timeout_s
    ae.connection_timeout = destination.timeout_s
    ae.maximum_pdu_size = destination.max_pdu
    watch = tls.HandshakeWatch()
    tls_args = _tls_args(destination, watch, where) if destination.tls else None
    assoc = ae.associate(destination.host, destination.port, contexts=list(contexts),
                         ae_title=destination.called_ae, max_pdu=destination.max_pdu,
                         evt_handlers=nodelay_handlers() + (attempt.handlers() if attempt else [])
                         + list(extra_handlers), tls_args=tls_args)
    if assoc.is_established:
        session = Session(assoc, destination)
        LOGGER.info("association to %s (%s:%d) established, %d contexts accepted, nodelay=%s",
                    destination.name, destination.host, destination.port,
                    len(assoc.accepted_contexts), session.nodelay)
        return session
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        if rj is None or rj.result is None or rj.result_source is None or rj.diagnostic is None:
            # pynetdicom sets all three from the A-ASSOCIATE-RJ; without them the cause is unknown
            raise AssociationFailed(classify_transport(f"{where}: association rejected without a reason"))
        verdict = classify_rejection(int(rj.result), int(rj.result_source), int(rj.diagnostic))
        raise AssociationFailed(Verdict(verdict.outcome, f"{where}: {verdict.reason}"))
    if watch.error is not None:
        raise AssociationFailed(classify_transport(f"{where}: TLS handshake failed: {watch.error}; nothing sent"),
                                tls_error=watch.error)
    raise AssociationFailed(classify_transport(
        f"{where}: no association (connection refused, timed out or aborted)"))
