"""The validator helper itself: a file it could not read is never 'no errors'."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dicom_inputs import build_test_dx, make_frame, make_item
from tests.peers import dciodvfy_errors, dciodvfy_tools

pytestmark = pytest.mark.peers


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    errors = dciodvfy_errors(tmp_path / "missing.dcm")
    assert errors and all("Abort" in e or "exit code" in e for e in errors)


def test_a_truncated_file_is_an_error(tmp_path: Path, valid_dx: Path) -> None:
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(valid_dx.read_bytes()[:2000])
    assert dciodvfy_errors(cut)


def test_a_file_that_is_not_dicom_is_an_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_text("hello, this is not DICOM\n" * 20)
    assert dciodvfy_errors(junk)


def test_a_valid_object_has_no_error_with_every_build(valid_dx: Path) -> None:
    assert dciodvfy_errors(valid_dx) == []
    assert len(dciodvfy_tools()) >= 1


@pytest.fixture
def valid_dx(tmp_path: Path) -> Path:
    ds = build_test_dx(make_item(), make_frame())
    path = tmp_path / "dx.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
