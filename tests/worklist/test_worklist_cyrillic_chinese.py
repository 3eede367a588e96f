"""ISO_IR 144 (Cyrillic) and GB18030 (Chinese) from both real worklist servers, Orthanc's
worklist plugin and DCMTK wlmscpfs --keep-char-set, serving files this test writes in that
character set: each name and description arrives character for character in the worklist and in
the DX image written (ISO_IR 192), which dciodvfy accepts."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.charset import convert_encodings

from gateway.dicom import to_bytes
from tests.dicom_inputs import build_test_dx
from tests.peers import Orthanc, WlmSCP
from tests.worklist.conftest import entry
from tests.worklist.test_worklist_charsets import header, publish, raw_names, service  # noqa: F401 - a fixture

pytestmark = pytest.mark.peers

# (Specific Character Set, Patient's Name, Scheduled Procedure Step Description)
CASES = [
    ("ISO_IR 144", "Иванов^Пётр Сергеевич", "Рентген грудной клетки, прямая"),
    ("GB18030", "Wang^XiaoDong=王^小东", "胸部正位摄影"),  # PS3.5 K.2 (its empty phonetic group dropped)
]


def wire_bytes(charset: str, text: str) -> bytes:
    """The text as a file in `charset` holds it (pydicom's own codecs for the DICOM term)."""
    return text.encode(convert_encodings([charset])[0])


@pytest.mark.parametrize("charset, name, description", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("server", ["wlmscpfs", "orthanc"])
def test_each_character_reaches_the_worklist_and_the_image(
        server: str, charset: str, name: str, description: str, request: pytest.FixtureRequest, tmp_path: Path,
        raw_names: list[tuple[Any, bytes]], dciodvfy: Callable[[Path | str], None]) -> None:  # noqa: F811
    peer: WlmSCP | Orthanc = request.getfixturevalue(server)  # wlmscpfs runs with --keep-char-set
    directory = peer.worklist_dir
    port, aet = (peer.port, peer.aet) if isinstance(peer, WlmSCP) else (peer.dicom_port, peer.aet)
    publish([entry(41, patient_name=name, charset=charset, sps_description=description),
             entry(42, patient_name="Müller^Jürgen", charset="ISO_IR 100")], directory)
    view = service(tmp_path, port, aet).worklist()

    # what came off the wire: wlmscpfs keeps the file's set and bytes; Orthanc converts to UTF-8 and says so
    [(declared, raw)] = [(cs, n) for cs, n in raw_names if not n.startswith(b"M")]
    declared_text = (declared.decode() if isinstance(declared, bytes) else str(declared)).strip()
    if server == "wlmscpfs":
        assert (declared_text, raw.rstrip(b" ")) == (charset, wire_bytes(charset, name))
    else:
        assert (declared_text, raw.rstrip(b" ")) == ("ISO_IR 192", name.encode("utf-8"))

    by_acc = {i.accession_number: i for i in view.items}
    assert list(by_acc["A41"].patient_name) == list(name)
    assert list(by_acc["A41"].sps_description) == list(description)
    assert by_acc["A42"].patient_name == "Müller^Jürgen"

    data = to_bytes(build_test_dx(by_acc["A41"]))
    assert b"\x1b" not in header(data)
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert list(str(back.PatientName)) == list(name)
    assert list(str(back.RequestAttributesSequence[0].ScheduledProcedureStepDescription)) == list(description)
    assert name.encode("utf-8") in data  # written as UTF-8, not as the RIS's set
    path = tmp_path / f"{charset.replace(' ', '_')}.dcm"
    path.write_bytes(data)
    dciodvfy(path)
