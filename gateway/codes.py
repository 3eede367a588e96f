"""A coded entry (Code Value, Coding Scheme Designator, Code Meaning) as a DICOM sequence item:
one helper for the images, the dose report, the MPPS messages and the demo's worklist."""

from __future__ import annotations

from pydicom.dataset import Dataset


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item
