"""Small, valid DICOM objects with fresh UIDs, as Part-10 bytes, for spool and forward tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from gateway.dicom import new_uid, to_bytes
from gateway.spool import Spool
from gateway.types import SpooledInstance
from tests.dicom_inputs import build_test_dx, make_frame, make_item

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
    """A small valid image with fresh UIDs: DX For Presentation from dxgate's own builder by
    default, or a Secondary Capture (a second SOP class on the same association)."""
    if pixels is None:
        pixels = np.random.default_rng(seed).integers(0, 4096, size=(rows, columns), dtype=np.uint16)
    accession = f"ACC{seed:05d}"
    item = make_item(accession_number=accession, study_instance_uid=study_instance_uid or new_uid("2.25"))
    ds = build_test_dx(item, make_frame(pixels))
    if sop_class_uid == SECONDARY_CAPTURE:
        ds = secondary_capture(ds)
    elif sop_class_uid != DX_FOR_PRESENTATION:
        raise ValueError(f"no test object for SOP class {sop_class_uid}")
    return TestObject(to_bytes(ds), str(ds.SOPInstanceUID), sop_class_uid, str(ds.StudyInstanceUID),
                      accession, pixels)


def secondary_capture(dx: Dataset) -> Dataset:
    """The same patient, study and pixels as a Secondary Capture Image (PS3.3 A.8.1)."""
    sc = Dataset()
    for kw in ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
               "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyInstanceUID",
               "SeriesInstanceUID", "SeriesNumber", "InstanceNumber", "Manufacturer", "SamplesPerPixel",
               "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
               "PixelRepresentation", "PixelData"):
        setattr(sc, kw, dx[kw].value)
    sc.SOPClassUID = SECONDARY_CAPTURE
    sc.SOPInstanceUID = new_uid("2.25")
    sc.Modality = "OT"
    sc.ConversionType = "WSD"
    sc.PatientOrientation = ""
    sc.Laterality = ""
    sc.PresentationLUTShape = "INVERSE" if sc.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY"
    return sc


def put(spool: Spool, obj: TestObject, destinations: tuple[str, ...] = ("pacs",)) -> SpooledInstance:
    return spool.put(obj.data, sop_instance_uid=obj.sop_instance_uid, sop_class_uid=obj.sop_class_uid,
                     study_instance_uid=obj.study_instance_uid, accession_number=obj.accession_number,
                     destinations=destinations)


class Clock:
    """The spool's injected clock (seconds), moved by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t
