"""The objects the spool and forward tests store and send are valid DICOM too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.spool.objects import DX_FOR_PRESENTATION, SECONDARY_CAPTURE, make_object


@pytest.mark.parametrize("sop_class_uid", [DX_FOR_PRESENTATION, SECONDARY_CAPTURE])
def test_test_objects_pass_dciodvfy(tmp_path: Path, dciodvfy: Callable[[Path], None], sop_class_uid: str) -> None:
    obj = make_object(96, 80, seed=1, sop_class_uid=sop_class_uid)
    path = tmp_path / "object.dcm"
    path.write_bytes(obj.data)
    dciodvfy(path)
