"""CalibrationStore: versioned, checksummed, refused when corrupt, foreign or too old."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

import gateway.correction.store as store_mod
from gateway.correction import CalibrationSet, CalibrationStore, Corrector, calibrate
from gateway.correction.store import _manifest_bytes
from gateway.errors import CalibrationError
from gateway.types import CalibrationKey
from hw_sim.detector_model import DetectorModel
from tests.correction.conftest import CAL_TIME, Panel

KEY = CalibrationKey("SIM-0001", "8x8")


@pytest.fixture(scope="module")
def panel8() -> Panel:
    return Panel(DetectorModel("8x8", seed=5))


@pytest.fixture(scope="module")
def cal8(panel8: Panel) -> CalibrationSet:
    return panel8.calibrate(4, 4)


def test_round_trip(tmp_path: Path, cal8: CalibrationSet) -> None:
    store = CalibrationStore(tmp_path)
    path = store.save(cal8)
    assert path == tmp_path / "SIM-0001" / "8x8" / cal8.calibration_id
    assert sorted(p.name for p in path.iterdir()) == ["defects.npy", "gain.npy", "manifest.json", "offset.npy"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"defects.npy", "gain.npy", "offset.npy"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert manifest["key"] == {"detector_serial": "SIM-0001", "mode": "8x8"}
    loaded = store.load(KEY)
    assert loaded.calibration_id == cal8.calibration_id
    assert loaded.created_at == cal8.created_at
    assert loaded.counts_per_ugy == cal8.counts_per_ugy
    assert loaded.temperature_c == cal8.temperature_c
    assert dict(loaded.provenance) == json.loads(json.dumps(dict(cal8.provenance)))
    for name in ("offset", "gain", "defects"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(cal8, name))
    assert not any(p.name.startswith(".") for p in path.parent.iterdir())  # no temporary left behind


def test_versions_never_overwritten_and_newest_wins(tmp_path: Path, panel8: Panel, cal8: CalibrationSet) -> None:
    store = CalibrationStore(tmp_path)
    first = store.save(cal8)
    with pytest.raises(CalibrationError, match="never overwritten"):
        store.save(cal8)
    newer = calibrate(panel8.darks(2), panel8.flats(2), flat_kerma_ugy=10, now=CAL_TIME + timedelta(days=1))
    second = store.save(newer)
    assert first.is_dir() and second.is_dir()
    assert store.latest(KEY).calibration_id == newer.calibration_id  # type: ignore[union-attr]
    assert store.load(KEY).calibration_id == newer.calibration_id


def test_none_exists(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    assert store.latest(KEY) is None
    with pytest.raises(CalibrationError, match="no calibration for detector SIM-0001 mode 8x8 .*`dxgate calibrate`"):
        store.load(KEY)


@pytest.mark.parametrize("name", ["offset.npy", "gain.npy", "defects.npy", "manifest.json"])
def test_flipped_byte_refused_naming_the_file(tmp_path: Path, cal8: CalibrationSet, name: str) -> None:
    store = CalibrationStore(tmp_path)
    target = store.save(cal8) / name
    data = bytearray(target.read_bytes())
    i = len(data) // 2 if name != "manifest.json" else data.index(b'"counts_per_ugy": ') + 19
    data[i] ^= 0x01  # in the manifest: changes a digit of counts_per_ugy, still valid JSON
    target.write_bytes(bytes(data))
    with pytest.raises(CalibrationError, match=rf"checksum mismatch in {target}"):
        store.load(KEY)


def test_truncated_manifest_refused(tmp_path: Path, cal8: CalibrationSet) -> None:
    store = CalibrationStore(tmp_path)
    manifest = store.save(cal8) / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    with pytest.raises(CalibrationError, match=rf"corrupt calibration manifest {manifest}"):
        store.load(KEY)


def test_manifest_for_another_serial_refused(tmp_path: Path, cal8: CalibrationSet) -> None:
    store = CalibrationStore(tmp_path)
    path = store.save(cal8)
    # Someone copies another panel's set into this panel's directory.
    foreign = tmp_path / "SIM-0002" / "8x8"
    foreign.mkdir(parents=True)
    shutil.copytree(path, foreign / path.name)
    with pytest.raises(CalibrationError, match=r"for detector SIM-0001 mode 8x8, not for detector SIM-0002 mode 8x8"):
        store.load(CalibrationKey("SIM-0002", "8x8"))


def test_manifest_for_another_mode_refused(tmp_path: Path, cal8: CalibrationSet) -> None:
    store = CalibrationStore(tmp_path)
    path = store.save(cal8)
    other = tmp_path / "SIM-0001" / "4x4"
    other.mkdir(parents=True)
    shutil.copytree(path, other / path.name)
    with pytest.raises(CalibrationError, match=r"mode 8x8, not for detector SIM-0001 mode 4x4"):
        store.load(CalibrationKey("SIM-0001", "4x4"))


def test_shape_mismatch_refused(tmp_path: Path, cal8: CalibrationSet) -> None:
    """Even with consistent checksums, maps of the wrong shape are refused."""
    store = CalibrationStore(tmp_path)
    path = store.save(cal8)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["manifest_sha256"]
    manifest["shape"] = [768, 768]
    (path / "manifest.json").write_bytes(_manifest_bytes(manifest))
    with pytest.raises(CalibrationError, match=rf"shape mismatch in {path / 'offset.npy'}"):
        store.load(KEY)


def test_too_old_refused(tmp_path: Path, cal8: CalibrationSet) -> None:
    store = CalibrationStore(tmp_path)
    store.save(cal8)
    assert store.load(KEY, max_age_days=180, now=CAL_TIME + timedelta(days=179)).calibration_id == cal8.calibration_id
    with pytest.raises(CalibrationError, match=r"is 181.0 days old, older than the limit of 180 days: recalibrate"):
        store.load(KEY, max_age_days=180, now=CAL_TIME + timedelta(days=181))


def test_newest_corrupt_is_not_silently_replaced_by_older(tmp_path: Path, panel8: Panel,
                                                         cal8: CalibrationSet) -> None:
    store = CalibrationStore(tmp_path)
    store.save(cal8)
    newer = calibrate(panel8.darks(2), panel8.flats(2), flat_kerma_ugy=10, now=CAL_TIME + timedelta(hours=1))
    (store.save(newer) / "gain.npy").write_bytes(b"garbage")
    with pytest.raises(CalibrationError, match="gain.npy"):
        store.load(KEY)


def test_leftover_temporary_ignored(tmp_path: Path, cal8: CalibrationSet) -> None:
    store = CalibrationStore(tmp_path)
    path = store.save(cal8)
    (path.parent / ".tmp-crashed-save").mkdir()
    (path.parent / "notes").mkdir()
    assert store.load(KEY).calibration_id == cal8.calibration_id


def test_unsafe_names_refused(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    with pytest.raises(CalibrationError, match="detector serial '../x' cannot name a directory"):
        store.latest(CalibrationKey("../x", "8x8"))


def test_save_failure_leaves_no_trace(tmp_path: Path, cal8: CalibrationSet, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    store = CalibrationStore(tmp_path)
    monkeypatch.setattr(store_mod, "write_new_file", boom)
    with pytest.raises(OSError, match="No space"):
        store.save(cal8)
    assert list((tmp_path / "SIM-0001" / "8x8").iterdir()) == []
    assert store.latest(KEY) is None


def test_loaded_set_corrects_like_the_original(tmp_path: Path, panel8: Panel, cal8: CalibrationSet) -> None:
    store = CalibrationStore(tmp_path)
    store.save(cal8)
    raw = panel8.frame(5.0)
    np.testing.assert_array_equal(Corrector(store.load(KEY)).apply(raw).pixels, Corrector(cal8).apply(raw).pixels)


def test_newer_format_refused_naming_file(tmp_path: Path, cal8: CalibrationSet) -> None:
    """A set written by a newer dxgate (checksums intact) is refused, not half-read."""
    store = CalibrationStore(tmp_path)
    manifest = store.save(cal8) / "manifest.json"
    doc = json.loads(manifest.read_bytes())
    doc.pop("manifest_sha256")
    doc["format"] = store_mod.FORMAT + 1
    manifest.write_bytes(_manifest_bytes(doc))
    with pytest.raises(CalibrationError, match=rf"{manifest}: written by a newer dxgate \(format "
                                               rf"{store_mod.FORMAT + 1}, this one reads format {store_mod.FORMAT}\)"):
        store.load(KEY)


def test_truncated_map_refused_naming_file(tmp_path: Path, cal8: CalibrationSet) -> None:
    store = CalibrationStore(tmp_path)
    gain = store.save(cal8) / "gain.npy"
    gain.write_bytes(gain.read_bytes()[:1000])
    with pytest.raises(CalibrationError, match=rf"checksum mismatch in {gain}: the calibration file is corrupt"):
        store.load(KEY)
