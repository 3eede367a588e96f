"""Part-10 bytes for the spool: preamble, file meta, Explicit VR Little Endian."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.dicom import EncodeError, to_bytes
from tests.dicom_inputs import build_test_dx


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


def _pydicom_bytes(ds: Dataset) -> bytes:
    """pydicom's own Part-10 writer on the same meta: the independent truth for the hand-written
    Pixel Data element."""
    buf = io.BytesIO()
    probe = copy.deepcopy(ds)
    probe.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    probe.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    probe.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    probe.file_meta.ImplementationVersionName = "DXGATE_01"
    pydicom.dcmwrite(buf, probe, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buf.getvalue()


@pytest.mark.parametrize("odd", [False, True], ids=["ow", "odd-length"])
def test_pixel_data_written_after_the_rest_is_byte_identical_to_pydicoms(odd: bool) -> None:
    ds = build_test_dx()
    ds.set_pixel_data(np.arange(97 * 81, dtype=np.uint16).reshape(97, 81) % 4096, "MONOCHROME2", 12,
                      generate_instance_uid=False)
    if odd:  # a value of odd length (as a reader may hand over) is padded to even, as pydicom pads it
        ds["PixelData"].value = ds["PixelData"].value[:-1]
    before = ds["PixelData"].value
    assert to_bytes(ds) == _pydicom_bytes(ds)
    assert ds["PixelData"].value is before and max(ds.keys()) == Tag(0x7FE0, 0x0010)  # the dataset is whole again


def test_an_element_after_pixel_data_is_written_in_order() -> None:
    ds = build_test_dx()
    ds.add_new(Tag(0xFFFC, 0xFFFC), "OB", b"\0\0")  # Data Set Trailing Padding follows Pixel Data
    assert to_bytes(ds) == _pydicom_bytes(ds)
