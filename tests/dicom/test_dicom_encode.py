"""Part-10 bytes for the spool: preamble, file meta, Explicit VR Little Endian."""

from __future__ import annotations

import io
from collections.abc import Callable

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.dicom import EncodeError, to_bytes


def test_part10_explicit_little_endian(build: Callable[..., Dataset]) -> None:
    ds = build(None)
    data = to_bytes(ds)
    assert data[128:132] == b"DICM"
    back = pydicom.dcmread(io.BytesIO(data))
    meta = back.file_meta
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.ImplementationVersionName == "DXGATE_01"


def test_is_deterministic_and_leaves_the_dataset_alone(build: Callable[..., Dataset]) -> None:
    ds = build(None)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # whatever the caller had
    first = to_bytes(ds)
    assert to_bytes(ds) == first
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


def test_refuses_a_dataset_without_identity() -> None:
    ds = Dataset()
    ds.PatientName = "X"
    with pytest.raises(EncodeError, match="SOPInstanceUID|SOPClassUID"):
        to_bytes(ds)
