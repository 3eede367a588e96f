"""Serialise a dataset to Part-10 bytes (the spool writes them; this stage never touches disk).

Text is checked before it is encoded: dxgate writes ISO_IR 192 (UTF-8), and no ESC byte (an
ISO 2022 escape sequence left undecoded somewhere upstream) nor any other control character may
reach an object — LT, ST and UT may hold TAB, LF, FF and CR (PS3.5 6.1.3). The worklist parser
refuses such text already; this is the last gate before the spool and the PACS.
"""

from __future__ import annotations

import copy
import io
import logging
import struct

from pydicom import dcmwrite
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import PersonName

from gateway.errors import DxgateError

LOGGER = logging.getLogger(__name__)

IMPLEMENTATION_VERSION_NAME = "DXGATE_01"
_FORMATTED_VRS = ("LT", "ST", "UT")  # may hold TAB, LF, FF and CR
_FORMAT_CONTROLS = frozenset("\t\n\f\r")


class EncodeError(DxgateError):
    """A dataset could not be written as a DICOM Part-10 file."""


def to_bytes(ds: Dataset) -> bytes:
    """Part-10 bytes (preamble, file meta, Explicit VR Little Endian dataset).

    The dataset itself is not modified: the file meta is rebuilt on a copy of its header.
    """
    for kw in ("SOPClassUID", "SOPInstanceUID"):
        if not getattr(ds, kw, ""):
            raise EncodeError(f"dataset has no {kw}: cannot write a Part-10 file")
    bad = control_text(ds)
    if bad:  # the keyword only: the value may be patient data
        raise EncodeError(f"instance {ds.SOPInstanceUID}: {bad} holds an escape sequence or a control character; "
                          "not written")
    meta = copy.deepcopy(getattr(ds, "file_meta", None) or FileMetaDataset())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    saved = ds.file_meta if hasattr(ds, "file_meta") else None
    ds.file_meta = meta
    pixels = _native_pixel_data_last(ds)
    if pixels is not None:  # written by hand after the rest: one copy of the pixels, not three
        del ds[_PIXEL_DATA]
    buf = io.BytesIO()
    try:
        dcmwrite(buf, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise EncodeError(f"instance {ds.SOPInstanceUID}: cannot encode: {exc}") from None
    finally:
        if pixels is not None:
            ds[_PIXEL_DATA] = pixels
        if saved is None:
            del ds.file_meta
        else:
            ds.file_meta = saved
    if pixels is None:
        return buf.getvalue()
    value: bytes = pixels.value
    pad = b"\0" if len(value) % 2 else b""
    head = _PIXEL_DATA_HEAD.pack(0x7FE0, 0x0010, pixels.VR.encode("ascii"), len(value) + len(pad))
    return b"".join((buf.getbuffer(), head, value, pad))


_PIXEL_DATA = Tag(0x7FE0, 0x0010)
_PIXEL_DATA_HEAD = struct.Struct("<HH2s2xI")  # explicit VR little endian, OB/OW: tag, VR, reserved, length


def _native_pixel_data_last(ds: Dataset) -> DataElement | None:
    """The Pixel Data element when it is native (bytes of defined length, OB or OW) and the
    dataset's last element, so that it can be written after the rest without changing a byte."""
    if _PIXEL_DATA not in ds or max(ds.keys()) != _PIXEL_DATA:
        return None
    elem = ds[_PIXEL_DATA]
    if elem.VR not in ("OB", "OW") or not isinstance(elem.value, bytes) or elem.is_undefined_length:
        return None
    return elem


def control_text(ds: Dataset) -> str:
    """The keyword of the first text element (at any depth) holding ESC, another C0 or C1 control
    character or DEL where its VR does not allow it; "" when there is none."""
    for elem in ds.iterall():
        value = elem.value
        values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
        allowed = _FORMAT_CONTROLS if elem.VR in _FORMATTED_VRS else frozenset()
        for v in values:
            if isinstance(v, (str, PersonName)) and any(
                    (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F) and c not in allowed for c in str(v)):
                return elem.keyword or str(elem.tag)
    return ""
