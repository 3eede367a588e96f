"""The offline worklist cache: round trip, atomic replacement, clear errors."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gateway.errors import WorklistError
from gateway.types import ProtocolCode, WorklistItem
from gateway.worklist import load_cache, load_cache_with_time, save_cache


def item(n: int, **kw: object) -> WorklistItem:
    values: dict[str, object] = dict(
        patient_name="Müller^Jürgen" if n == 1 else "山田^太郎", patient_id=f"P{n}",
        patient_birth_date=date(1955, 11, 3),
        patient_sex="M", accession_number=f"A{n}", study_instance_uid=f"1.2.3.{n}", requested_procedure_id=f"RP{n}",
        requested_procedure_description="Thorax", sps_id=f"S{n}", sps_description="Thorax p.a.",
        sps_start=datetime(2026, 11, 22, 9, n), modality="DX", scheduled_station_ae="DXGATE",
        protocol_codes=(ProtocolCode("36554-4", "LN", "XR Chest PA"),), referenced_study_sop_instance_uid="1.2.3.99")
    values.update(kw)
    return WorklistItem(**values)  # type: ignore[arg-type]


def test_round_trip(tmp_path: Path) -> None:
    items = [item(1), item(2, patient_birth_date=None, sps_start=None, protocol_codes=())]
    path = tmp_path / "cache" / "worklist.json"
    saved_at = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    save_cache(items, path, saved_at=saved_at)
    assert load_cache(path) == items
    assert load_cache_with_time(path) == (items, saved_at)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # it holds patient data
    assert "Müller^Jürgen" in path.read_text(encoding="utf-8")


def test_replaces_atomically_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "worklist.json"
    save_cache([item(1), item(2)], path)
    save_cache([item(2)], path)
    assert [i.accession_number for i in load_cache(path)] == ["A2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worklist.json"]


def test_missing_cache_is_empty(tmp_path: Path) -> None:
    assert load_cache(tmp_path / "none.json") == []
    assert load_cache_with_time(tmp_path / "none.json") == ([], None)


@pytest.mark.parametrize("content", [b"{not json", b"[]", json.dumps({"format": "other"}).encode(),
                                     json.dumps({"format": "dxgate-worklist-cache", "version": 99}).encode(),
                                     json.dumps({"format": "dxgate-worklist-cache", "version": 1,
                                                 "saved_at": "2026-11-22T09:00:00+00:00",
                                                 "items": [{"patient_id": 5}]}).encode(),
                                     b"\xff\xfe"])
def test_corrupt_cache_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "worklist.json"
    path.write_bytes(content)
    with pytest.raises(WorklistError, match="worklist.json is unreadable"):
        load_cache(path)


def test_a_corrupt_item_is_refused_without_quoting_patient_data(tmp_path: Path) -> None:
    path = tmp_path / "worklist.json"
    save_cache([item(1)], path)
    path.write_text(path.read_text(encoding="utf-8").replace("1955-11-03", "1955-13-03"), encoding="utf-8")
    with pytest.raises(WorklistError) as err:
        load_cache(path)
    assert "item 0 is malformed" in str(err.value)
    assert "1955" not in str(err.value) and "Müller" not in str(err.value)


@pytest.mark.parametrize("field, value", [("patient_name", "Hong^Gildong=\x1b$)C홍^\x1b$)C길동"),
                                          ("sps_description", "Thorax\x85p.a."),
                                          ("patient_name", "Hong^Gildong=$)C^$)C")])
def test_text_that_must_not_reach_an_image_is_never_cached(tmp_path: Path, field: str, value: str) -> None:
    path = tmp_path / "worklist.json"
    save_cache([item(1)], path)
    with pytest.raises(WorklistError, match=rf"not saved: item 1 holds .* in {field}") as err:
        save_cache([item(2), item(3, **{field: value})], path)
    assert value not in str(err.value) and "Gildong" not in str(err.value)
    assert [i.accession_number for i in load_cache(path)] == ["A1"]  # the old cache stands


def test_an_old_cache_item_holding_an_escape_is_skipped_with_a_warning(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A cache written before dxgate refused such text (the site's: ESC $ ) C in a Korean name)
    must not put it into an image while the RIS is down."""
    path = tmp_path / "worklist.json"
    save_cache([item(1), item(2, patient_name="Hong^Gildong")], path)
    path.write_text(path.read_text(encoding="utf-8").replace("Hong^Gildong", "Hong^Gildong=\\u001b$)C\\ud64d"),
                    encoding="utf-8")
    with caplog.at_level("WARNING"):
        items = load_cache(path)
    assert [i.accession_number for i in items] == ["A1"]
    assert "item 1 skipped: it holds an ISO 2022 escape sequence left undecoded in patient_name" in caplog.text
    assert "Gildong" not in caplog.text
