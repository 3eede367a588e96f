"""Serialise a dataset to Part-10 bytes (the spool writes them; this stage never touches disk)."""

from __future__ import annotations

import copy
import io
import logging

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from gateway.errors import DxgateError

LOGGER = logging.getLogger(__name__)

IMPLEMENTATION_VERSION_NAME = "DXGATE_01"


class EncodeError(DxgateError):
    """A dataset could not be written as a DICOM Part-10 file."""


def to_bytes(ds: Dataset) -> bytes:
    """Part-10 bytes (preamble, file meta, Explicit VR Little Endian dataset).

    The dataset itself is not modified: the file meta is rebuilt on a copy of its header.
    """
    for kw in ("SOPClassUID", "SOPInstanceUID"):
        if not getattr(ds, kw, ""):
            raise EncodeError(f"dataset has no {kw}: cannot write a Part-10 file")
    meta = copy.deepcopy(getattr(ds, "file_meta", None) or FileMetaDataset())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    saved = ds.file_meta if hasattr(ds, "file_meta") else None
    ds.file_meta = meta
    buf = io.BytesIO()
    try:
        dcmwrite(buf, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise EncodeError(f"instance {ds.SOPInstanceUID}: cannot encode: {exc}") from None
    finally:
        if saved is None:
            del ds.file_meta
        else:
            ds.file_meta = saved
    return buf.getvalue()
