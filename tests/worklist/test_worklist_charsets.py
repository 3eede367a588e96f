"""Character sets from real RIS peers: decoded with pydicom's charset handling, or flagged.

The rule: no ESC byte (0x1B) nor any other control character reaches the worklist cache or an
ISO_IR 192 object; text that cannot be decoded with confidence (non-ASCII bytes with no
Specific Character Set, escape sequences left in UTF-8, invalid UTF-8) makes its answer skipped
with a reason that holds no patient data — never guessed.

KOREAN is the example of PS3.5 H.3.1 ("ISO 2022 IR 6\\ISO 2022 IR 149", an escape sequence
before each Hangul/Hanja run).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.charset import CODES_TO_ENCODINGS, convert_encodings
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName
from pynetdicom.dsutils import decode, encode

from gateway.config import Config, WorklistConfig
from gateway.dicom import EncodeError, to_bytes
from gateway.errors import WorklistError
from gateway.peers import WorklistServer, worklist_file_bytes
from gateway.worklist import client, load_cache, parse_answer, query_worklist_result
from gateway.worklist.text import UndecodableText, decode_text, decode_values
from gateway.worklist_service import WorklistService
from tests.dicom_inputs import build_test_dx
from tests.peers import Orthanc, WlmSCP
from tests.worklist.conftest import DAY, START, STATION, ConfiguredWlmSCP, entry

KOREAN = "Hong^Gildong=洪^吉洞=홍^길동"
KOREAN_CHARSET = "ISO 2022 IR 6\\ISO 2022 IR 149"
KOREAN_BYTES = (b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5"
                b"\xbf")  # PS3.5 Table H.3-1 (the byte string, as the standard prints it)
KOREAN_DESCRIPTION = "흉부 정면"
NOW = datetime.combine(DAY, START.time())
CANARY_ID = "SECRETKR77"


def korean_entry(n: int = 31, charset: str = KOREAN_CHARSET, **kw: Any) -> Dataset:
    return entry(n, patient_name=KOREAN, charset=charset, sps_description=KOREAN_DESCRIPTION, patient_id=CANARY_ID,
                 **kw)


def on_the_wire(ds: Dataset) -> Dataset:
    """Encoded as a C-FIND identifier and decoded as pynetdicom does (raw elements), whatever pydicom
    thinks of its character set."""
    with pydicom.config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unknown character set: pydicom warns when reading too
        data = encode(ds, False, True)
        assert data is not None
        return decode(io.BytesIO(data), False, True)


def publish(entries: list[Dataset], directory: Path) -> None:
    for n, e in enumerate(entries, 1):
        (directory / f"entry{n}.wl").write_bytes(worklist_file_bytes(e))


def service(tmp_path: Path, port: int, called_ae: str) -> WorklistService:
    config = Config(state_dir=str(tmp_path), worklist=WorklistConfig(port=port, called_ae=called_ae, timeout_s=5.0))
    return WorklistService(config, clock=lambda: NOW)


@pytest.fixture
def raw_names(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, bytes]]:
    """(Specific Character Set, Patient's Name bytes) of every answer, as they came off the wire."""
    seen: list[tuple[Any, bytes]] = []
    real = client.parse_steps

    def spying(ds: Dataset) -> Any:
        cs, name = ds.get_item(0x00080005), ds.get_item(0x00100010)
        seen.append((None if cs is None else cs.value, name.value if name is not None else b""))
        return real(ds)

    monkeypatch.setattr(client, "parse_steps", spying)
    return seen


def header(data: bytes) -> bytes:
    """A Part-10 file up to its Pixel Data (pixel bytes may hold 0x1B; text may not)."""
    end = data.rfind(b"\xe0\x7f\x10\x00OW")
    assert end > 0
    return data[:end]


def no_patient_data(text: str) -> bool:
    return all(s not in text for s in (CANARY_ID, "Hong", "Gildong", "홍", "Müller", "Jürgen", "Παπαδ"))


# --- (b) ISO 2022 IR 149 from a real server, to the cache and the image --------------------------------

@pytest.mark.peers
def test_wlmscpfs_korean_iso2022_is_decoded_and_no_esc_reaches_the_cache_or_the_image(
        wlmscpfs: WlmSCP, tmp_path: Path, raw_names: list[tuple[Any, bytes]],
        dciodvfy: Callable[[Path | str], None]) -> None:
    publish([korean_entry(), entry(32, patient_name="Müller^Jürgen", charset="ISO_IR 100")], wlmscpfs.worklist_dir)
    wl = service(tmp_path, wlmscpfs.port, wlmscpfs.aet)
    view = wl.worklist()
    # the answer really held the ISO 2022 escape sequences, declared as such
    (declared, raw), = [(cs, name) for cs, name in raw_names if name.startswith(b"Hong")]
    assert ([t.strip() for t in declared.decode().split("\\")], raw.rstrip(b" ")) == (
        ["ISO 2022 IR 6", "ISO 2022 IR 149"], KOREAN_BYTES)
    by_acc = {i.accession_number: i for i in view.items}
    assert by_acc["A31"].patient_name == KOREAN and by_acc["A31"].sps_description == KOREAN_DESCRIPTION
    assert by_acc["A32"].patient_name == "Müller^Jürgen"

    cache = wl._config.path(wl._config.worklist.cache)  # noqa: SLF001 - the file the service wrote
    raw_cache = cache.read_bytes()
    assert b"\x1b" not in raw_cache and b"\\u001b" not in raw_cache.lower()
    assert {i.patient_name for i in load_cache(cache)} == {KOREAN, "Müller^Jürgen"}

    data = to_bytes(build_test_dx(by_acc["A31"]))
    assert b"\x1b" not in header(data)
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.SpecificCharacterSet == "ISO_IR 192" and str(back.PatientName) == KOREAN
    assert KOREAN.encode("utf-8") in data
    path = tmp_path / "korean.dcm"
    path.write_bytes(data)
    dciodvfy(path)


@pytest.mark.peers
def test_orthanc_korean_answers_with_escapes_left_in_utf8_are_skipped(
        orthanc: Orthanc, tmp_path: Path, raw_names: list[tuple[Any, bytes]],
        caplog: pytest.LogCaptureFixture) -> None:
    """Orthanc 1.10 converts ISO 2022 IR 149 entries to ISO_IR 192 badly: declared '\\ISO 2022 IR
    149' (PS3.5 H.3.1's own form), the Hangul arrives with the ESC $ ) C designators still in the
    UTF-8 (the site's report); declared 'ISO 2022 IR 6\\ISO 2022 IR 149', the Hangul is lost and
    "$)C" remains without its ESC. Both answers are skipped, the others kept."""
    publish([korean_entry(31, charset="\\ISO 2022 IR 149"), korean_entry(33), entry(32, patient_name="Núñez^José")],
            orthanc.worklist_dir)
    wl = service(tmp_path, orthanc.dicom_port, orthanc.aet)
    with caplog.at_level(logging.DEBUG):
        view = wl.worklist()
    korean = sorted(raw for cs, raw in raw_names if raw.startswith(b"Hong"))
    assert korean == [b"Hong^Gildong=\x1b$)C" + "洪^".encode() + b"\x1b$)C" + "吉洞=".encode() + b"\x1b$)C"
                      + "홍^".encode() + b"\x1b$)C" + "길동".encode(), b"Hong^Gildong=$)C^$)C=$)C^$)C"], raw_names
    assert [i.patient_name for i in view.items] == ["Núñez^José"]
    assert "answer's PatientName cannot be decoded with confidence: it holds an escape sequence" in caplog.text
    assert "answer's PatientName holds the remains of an ISO 2022 escape sequence" in caplog.text
    assert no_patient_data(caplog.text)
    raw_cache = wl._config.path(wl._config.worklist.cache).read_bytes()  # noqa: SLF001
    assert b"\x1b" not in raw_cache and b"\\u001b" not in raw_cache.lower()


# --- (c) undeclared non-ASCII text is flagged, not guessed ---------------------------------------------

@pytest.mark.peers
def test_wlmscpfs_without_a_character_set_in_its_answers_is_flagged_not_guessed(
        wlmscpfs_with: Callable[..., ConfiguredWlmSCP], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """wlmscpfs by default drops Specific Character Set from its answers and sends the file's bytes:
    ISO 2022 Korean, Latin-1 and UTF-8 alike arrive undeclared. Only the ASCII entry is usable."""
    peer = wlmscpfs_with()  # --return-no-char-set, its default
    publish([korean_entry(), entry(32, patient_name="Müller^Jürgen", charset="ISO_IR 100"),
             entry(33, patient_name="Παπαδόπουλος^Νίκος"), entry(34, patient_name="Doe^Jane")], peer.worklist_dir)
    with caplog.at_level(logging.DEBUG):
        result = query_worklist_result(host="127.0.0.1", port=peer.port, called_ae=peer.aet, calling_ae=STATION,
                                       on=DAY, timeout_s=5.0)
    assert [(i.accession_number, i.patient_name) for i in result.items] == [("A34", "Doe^Jane")]
    assert len(result.skipped) == 3
    assert sum("escape sequence and no Specific Character Set is declared" in s for s in result.skipped) == 1
    assert sum("non-ASCII bytes and no Specific Character Set is declared" in s for s in result.skipped) == 2
    assert no_patient_data(" ".join(result.skipped)) and no_patient_data(caplog.text)


class RawServer(WorklistServer):
    """Answers its items as they are, bytes values included (a scripted, hostile RIS)."""

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        for item in self.items:
            yield 0xFF00, item


def answer_with(charset: Any, name: bytes) -> Dataset:
    ds = entry(35, patient_id=CANARY_ID)
    with pydicom.config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a RIS does not validate what it sends
        if charset is None:
            del ds.SpecificCharacterSet
        else:
            ds.SpecificCharacterSet = charset
        ds.PatientName = name  # bytes: written as they are
    return ds


@pytest.mark.parametrize("charset, name, reason", [
    # what Orthanc made of ISO 2022 IR 149, and UTF-8 with an ISO 2022 "back to ASCII" inside
    ("ISO_IR 192", b"Hong^Gildong=\x1b$)C^\x1b$)C=\x1b$)C\xed\x99\x8d^", "escape sequence and its Specific "
                                                                        "Character Set is ISO_IR 192"),
    ("ISO_IR 192", b"Doe\x1b(B^M\xc3\xbcller", "escape sequence and its Specific Character Set is ISO_IR 192"),
    ("ISO_IR 192", "Müller".encode("latin-1"), "bytes that are not valid text"),
    (None, "Müller".encode("latin-1"), "non-ASCII bytes and no Specific Character Set is declared"),
    (None, KOREAN_BYTES, "escape sequence and no Specific Character Set is declared"),
    ("ISO_IR 6", "Müller".encode("latin-1"), "non-ASCII bytes and its Specific Character Set is ISO_IR 6"),
    (["ISO 2022 IR 6", "ISO 2022 IR 149"], b"Hong^\xfb\xf3", "non-ASCII bytes"),  # Korean, no designator
    (["ISO 2022 IR 6", "ISO 2022 IR 149"], b"Hong^\x1b$B;3ED", "escape sequence or one for a character set not "
                                                               "declared"),  # JIS X 0208, undeclared
    (["ISO 2022 IR 6", "ISO 2022 IR 149"], b"Hong^Gildong=$)C^$)C", "remains of an ISO 2022 escape sequence"),
    ("ISO_IR 100", b"M\x85ller", "holds control characters"),  # a C1 control, valid Latin-1 bytes
])
def test_text_that_cannot_be_decoded_with_confidence_is_flagged(charset: Any, name: bytes, reason: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    server = RawServer([entry(1), answer_with(charset, name)], ae_title="RAW")
    port = server.start()
    try:
        with caplog.at_level(logging.DEBUG):
            result = query_worklist_result(host="127.0.0.1", port=port, called_ae="RAW", calling_ae=STATION,
                                           on=DAY, timeout_s=5.0)
    finally:
        server.stop()
    assert [i.accession_number for i in result.items] == ["A1"]
    assert len(result.skipped) == 1 and "answer's PatientName " in result.skipped[0]
    assert reason in result.skipped[0], result.skipped
    assert no_patient_data(result.skipped[0]) and no_patient_data(caplog.text)


@pytest.mark.parametrize("charset, reason", [
    ("ISO_IR_192", "Specific Character Set 'ISO_IR_192' is not a defined term"),  # pydicom would "correct" it
    (["ISO_IR 192", "ISO 2022 IR 149"], "combines a character set without code extensions"),
    ("ISO 2022 IR 999", "is not a defined term"),
])
def test_an_unknown_or_illegal_character_set_is_flagged_for_non_ascii_text(charset: Any, reason: str) -> None:
    """(pynetdicom will not even send such an answer: it is built on the wire here.)"""
    wire = on_the_wire(answer_with(charset, "Müller".encode()))
    ascii_wire = on_the_wire(answer_with(charset, b"Doe^Jane"))
    with pytest.raises(WorklistError, match="answer's PatientName cannot be decoded with confidence") as err:
        parse_answer(wire)
    assert reason in str(err.value) and no_patient_data(str(err.value))
    assert parse_answer(ascii_wire)[0].patient_name == "Doe^Jane"  # ASCII reads alike in every character set


def test_korean_iso2022_from_the_embedded_server_is_decoded() -> None:
    server = RawServer([korean_entry()], ae_title="RAW")
    port = server.start()
    try:
        result = query_worklist_result(host="127.0.0.1", port=port, called_ae="RAW", calling_ae=STATION, on=DAY,
                                       timeout_s=5.0)
    finally:
        server.stop()
    assert [(i.patient_name, i.sps_description) for i in result.items] == [(KOREAN, KOREAN_DESCRIPTION)]


# --- the object: the last gate -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Hong\x1b$)C^Gildong", "Doe^Jane\x85", "Doe\r^Jane"])
def test_an_image_with_an_escape_or_control_character_is_not_written(name: str) -> None:
    from tests.dicom_inputs import make_item

    ds = build_test_dx(make_item(patient_name=name))
    with pytest.raises(EncodeError, match="PatientName holds an escape sequence or a control character") as err:
        to_bytes(ds)
    assert "Gildong" not in str(err.value) and "Jane" not in str(err.value)


def test_formatting_characters_stay_allowed_where_the_vr_allows_them() -> None:
    from tests.dicom_inputs import make_item

    ds = build_test_dx(make_item(patient_name=KOREAN))
    ds.ImageComments = "line one\r\nline two\tend"  # LT
    assert b"line one\r\nline two\tend" in header(to_bytes(ds))


# --- (d) properties of the decoder ----------------------------------------------------------------------

_CHARSETS = [None, "", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192", "ISO_IR 13", "GB18030", "ISO 2022 IR 100",
             ["ISO 2022 IR 6", "ISO 2022 IR 149"], ["", "ISO 2022 IR 149"], ["", "ISO 2022 IR 87"],
             ["ISO 2022 IR 13", "ISO 2022 IR 87"], ["ISO 2022 IR 6", "ISO 2022 IR 58"],
             ["ISO 2022 IR 100", "ISO 2022 IR 126"], "ISO 2022 IR 149", "NONSENSE"]
_PIECES = st.one_of(
    st.sampled_from([*CODES_TO_ENCODINGS, b"\x1b", b"\x1b$", b"\x1b$)", b"\x1b(", b"\x1b-"]),  # escapes, broken too
    st.binary(max_size=6),
    st.sampled_from([b"\x00", b"\t", b"\n", b"\r", b"\x7f", b"\x85", b"\x9b", b"\\", b"^", b"=", b" ",
                     b"\xef\xbf\xbd", b"\xc2\x85", b"\xe2\x80\xa8"]),
    st.text(max_size=4).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(["Müller", "홍길동", "山田", "やまだ", "Ωμέγα"]).flatmap(
        lambda t: st.sampled_from([t.encode(c, "ignore") for c in ("utf-8", "latin-1", "euc_kr", "iso2022_jp",
                                                                     "shift_jis", "gb18030", "iso8859_7")])),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PIECES, max_size=8).map(b"".join), st.sampled_from(_CHARSETS),
       st.sampled_from(["PN", "LO", "SH", "LT", "UT", "CS", "DA"]))
def test_whatever_the_decoder_accepts_holds_no_escape_or_control_character(raw: bytes, charset: Any, vr: str) -> None:
    try:
        values = decode_values(raw, __import__("gateway.worklist.text").worklist.text.character_set(charset), vr)
    except UndecodableText:
        return
    allowed = "\t\n\f\r" if vr in ("LT", "ST", "UT") else ""
    for value in values:
        assert "\x1b" not in value
        assert not any((ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F) and c not in allowed for c in value), value
        assert "\ufffd" not in value


_COMPONENT = st.text(alphabet=st.sampled_from("ABCdefXYZ 0123456789-.,'()äöüßéñçøÅ"), max_size=12)
_SCRIPTS: list[tuple[Any, str]] = [
    ("ISO_IR 192", "AZaz09 äöüßéΩμέγαДжя홍길동山田やまだ漢字"),
    ("ISO_IR 100", "AZaz09 äöüßéñçøÅ"),
    (["ISO 2022 IR 6", "ISO 2022 IR 149"], "AZaz09 홍길동한국어洪吉洞"),
    (["", "ISO 2022 IR 87"], "AZaz09 山田太郎やまだたろう漢字"),
    ("GB18030", "AZaz09 王小東中文äöΩ"),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_SCRIPTS).flatmap(lambda s: st.tuples(
    st.just(s[0]), st.lists(st.text(alphabet=s[1], max_size=8), min_size=1, max_size=3))))
def test_text_encoded_in_its_declared_character_set_is_decoded_exactly(case: tuple[Any, list[str]]) -> None:
    """The other half of confidence: what pydicom writes in a declared character set is never refused."""
    charset, parts = case
    name = "^".join(p.strip() for p in parts).rstrip("^")
    raw = PersonName(name, encodings=convert_encodings(charset)).encode()
    assert decode_text(raw, charset, "PN") == name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PIECES, max_size=8).map(b"".join), st.sampled_from(_CHARSETS))
def test_whatever_name_bytes_an_answer_holds_the_item_is_clean_or_the_answer_is_refused(raw: bytes,
                                                                                      charset: Any) -> None:
    wire = on_the_wire(answer_with(charset, raw))
    try:
        items = parse_answer(wire)
    except WorklistError as exc:
        assert CANARY_ID not in str(exc)
        return
    for item in items:
        for value in vars(item).values():
            if isinstance(value, str):
                assert "\x1b" not in value and "\ufffd" not in value
                assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)


def test_identifiers_reach_the_parser_undecoded_even_if_pynetdicom_was_told_to_print_them(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Printing an identifier makes pydicom decode it its own lenient way first (UTF-8 holding
    ESC ( B becomes Latin-1 mojibake, with no trace left): the client keeps identifiers raw, and
    out of the logs, whoever configured pynetdicom before."""
    from pynetdicom import _config as pynetdicom_config

    monkeypatch.setattr(pynetdicom_config, "LOG_RESPONSE_IDENTIFIERS", True)
    server = RawServer([entry(1), answer_with("ISO_IR 192", b"Doe\x1b(B^M\xc3\xbcller")], ae_title="RAW")
    port = server.start()
    try:
        with caplog.at_level(logging.DEBUG):
            result = query_worklist_result(host="127.0.0.1", port=port, called_ae="RAW", calling_ae=STATION,
                                           on=DAY, timeout_s=5.0)
    finally:
        server.stop()
    assert [i.accession_number for i in result.items] == ["A1"]
    assert len(result.skipped) == 1 and "escape sequence" in result.skipped[0]
    assert CANARY_ID not in caplog.text
