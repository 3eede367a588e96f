"""Fixtures for the DICOM builder tests (inputs live in tests/dicom_inputs.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydicom.dataset import Dataset

from tests.dicom_inputs import build_test_dx


@pytest.fixture
def build() -> Callable[..., Dataset]:
    """build(item=None, frame=None, **overrides) -> the DX dataset."""
    return build_test_dx
