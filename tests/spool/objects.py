"""Small, valid DICOM objects with fresh UIDs, as Part-10 bytes, for spool and forward tests."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from gateway.spool import Spool
from gateway.types import SpooledInstance

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True, eq=False)
class TestObject:
    __test__ = False  # not a pytest class

    data: bytes
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    accession_number: str
    pixels: np.ndarray


def make_object(rows: int = 64, columns: int = 64, *, seed: int = 0, sop_class_uid: str = DX_FOR_PRESENTATION,
                study_instance_uid: str | None = None, pixels: np.ndarray | None = None) -> TestObject:
    """A small 16-bit MONOCHROME2 image with fresh UIDs (DX for presentation by default)."""
    if pixels is None:
        pixels = np.random.default_rng(seed).integers(0, 4096, size=(rows, columns), dtype=np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX" if sop_class_uid == DX_FOR_PRESENTATION else "OT"
    ds.PatientName = "Test^Spool"
    ds.PatientID = "SPOOL-TEST"
    ds.AccessionNumber = f"ACC{seed:05d}"
    ds.StudyDate = "20240101"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.set_pixel_data(pixels, photometric_interpretation="MONOCHROME2", bits_stored=16)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return TestObject(buf.getvalue(), str(ds.SOPInstanceUID), sop_class_uid, str(ds.StudyInstanceUID),
                      str(ds.AccessionNumber), pixels)


def put(spool: Spool, obj: TestObject, destinations: tuple[str, ...] = ("pacs",)) -> SpooledInstance:
    return spool.put(obj.data, sop_instance_uid=obj.sop_instance_uid, sop_class_uid=obj.sop_class_uid,
                     study_instance_uid=obj.study_instance_uid, accession_number=obj.accession_number,
                     destinations=destinations)
