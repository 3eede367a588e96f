"""No dose without a kept image (DESIGN.md invariant 0), on real file systems and real processes.

Each test counts the simulated generator's X-ray pulses (the hardware's own truth) and checks
what was kept: before the tube fires every cause that could refuse the image refuses the
exposure (0 pulses); once a pulse was given, the frame is kept whatever fails afterwards and
becomes an image by `reprocess` once the cause is fixed. Small file systems are real tmpfs
mounts (root is needed; in CI a missing capability fails the test instead of skipping it).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from gateway import imaging
from gateway.alarms import Alarms
from gateway.app import Gateway
from gateway.config import (
    CalibrationConfig,
    Config,
    DestinationConfig,
    DetectorConfig,
    GeneratorConfig,
    SpoolConfig,
    to_toml,
)
from gateway.correction import store as calibration_store
from gateway.errors import ExposureRefused, FrameKeptError
from gateway.types import Anatomy, Technique
from hw_sim.room import SimRoom
from tests.peers import free_port, in_ci

MODE = "8x8"  # 384 x 384: small frames keep the tests fast


@pytest.fixture
def room() -> Iterator[SimRoom]:
    with SimRoom(seed=11) as sim:
        yield sim


class Mounts:
    """tmpfs mounts made by a test, unmounted at its end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.points: list[Path] = []

    def tmpfs(self, name: str, *, size: str = "64m", inodes: int | None = None) -> Path:
        point = self.base / name
        point.mkdir(parents=True)
        opts = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            msg = f"cannot mount a tmpfs (needs root): {done.stderr.decode(errors='replace').strip()}"
            if in_ci():
                pytest.fail(msg, pytrace=False)
            pytest.skip(msg)
        self.points.append(point)
        return point

    def remount_ro(self, point: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)

    def unmount_all(self) -> None:
        for point in reversed(self.points):
            subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Mounts]:
    m = Mounts(tmp_path / "mnt")
    try:
        yield m
    finally:
        m.unmount_all()


def config_for(tmp_path: Path, room: SimRoom, **spool: object) -> Config:
    spool_cfg = {"min_free_mb": 0, **spool}
    return Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode=MODE),
                  generator=GeneratorConfig(port=room.start_generator()),
                  calibration=CalibrationConfig(dark_frames=4, flat_frames=4),
                  spool=SpoolConfig(**spool_cfg),  # type: ignore[arg-type]
                  destinations=(DestinationConfig(name="pacs", port=free_port(), called_ae="PACS"),))


def calibrated(config: Config, room: SimRoom) -> Gateway:
    gw = Gateway(config, usb_backend=room.usb_backend())
    room.place("open")
    gw.calibrate()
    room.place("chest")
    return gw


def fill(directory: Path) -> None:
    """Write into `directory` until its file system has no byte left."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)


def refused_without_dose(gw: Gateway, room: SimRoom, match: str) -> None:
    pulses = len(room.pulses)
    spooled = sum(gw.spool.counts().values())
    with pytest.raises(ExposureRefused, match=match):
        gw.expose(gw.open_exam(None))
    assert len(room.pulses) == pulses, "the tube fired for an exposure that was refused"
    assert sum(gw.spool.counts().values()) == spooled
    assert gw.raw_store.pending() == []


# --- before the tube fires -------------------------------------------------------------------


def test_a_spool_without_free_inodes_refuses_the_exposure(tmp_path: Path, room: SimRoom, mounts: Mounts) -> None:
    spool_fs = mounts.tmpfs("spool", size="256m", inodes=1200)
    config = config_for(tmp_path, room, directory=str(spool_fs / "spool"), min_free_inodes=100)
    with calibrated(config, room) as gw:
        gw.expose(gw.open_exam(None))  # room enough: saved
        st = os.statvfs(spool_fs)
        for n in range(st.f_favail - 50):  # plenty of bytes left, but nearly no inode
            (spool_fs / f"f{n}").touch()
        assert os.statvfs(spool_fs).f_bavail * os.statvfs(spool_fs).f_frsize > 200 * 1024 * 1024
        refused_without_dose(gw, room, r"free inodes")


def test_a_read_only_spool_refuses_the_exposure(tmp_path: Path, room: SimRoom, mounts: Mounts) -> None:
    spool_fs = mounts.tmpfs("spool")
    config = config_for(tmp_path, room, directory=str(spool_fs / "spool"))
    with calibrated(config, room) as gw:
        kept = gw.expose(gw.open_exam(None))
        mounts.remount_ro(spool_fs)
        refused_without_dose(gw, room, r"cannot write in .*spool.*Read-only file system")
        assert Path(kept.instance.path).read_bytes()  # what was saved stays readable


def test_a_full_database_file_system_refuses_the_exposure(tmp_path: Path, room: SimRoom, mounts: Mounts) -> None:
    db_fs = mounts.tmpfs("db", size="4m")
    config = config_for(tmp_path, room, database=str(db_fs / "state.db"))
    with calibrated(config, room) as gw:
        gw.expose(gw.open_exam(None))
        fill(db_fs)
        refused_without_dose(gw, room, r"file system of .*db.* bytes free")


def test_a_full_spool_disk_refuses_the_exposure_and_keeps_what_is_spooled(
        tmp_path: Path, room: SimRoom, mounts: Mounts) -> None:
    spool_fs = mounts.tmpfs("spool", size="8m")
    config = config_for(tmp_path, room, directory=str(spool_fs / "spool"))
    with calibrated(config, room) as gw:
        kept = gw.expose(gw.open_exam(None))
        fill(spool_fs)
        refused_without_dose(gw, room, r"acquisition refused until space is freed")
        assert Path(kept.instance.path).exists()  # spooled images are never deleted to make room
        (spool_fs / "filler").unlink()
        gw.expose(gw.open_exam(None))  # space freed: the room works again
        assert gw.spool.counts()["pending"] == 2


def _hold_write_lock(database: Path, seconds: float | None) -> subprocess.Popen[str]:
    """Another process holding the state database's write lock (for `seconds`, or until killed)."""
    code = ("import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            "if sys.argv[2] == 'forever':\n"
            "    sys.stdin.read()\n"
            "else:\n"
            "    time.sleep(float(sys.argv[2]))\n"  # the other process's work, not a wait in the test
            "c.execute('COMMIT')\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(database), "forever" if seconds is None else str(seconds)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_database_locked_for_two_seconds_waits_instead_of_failing(tmp_path: Path, room: SimRoom) -> None:
    config = config_for(tmp_path, room, db_busy_timeout_s=10.0)
    with calibrated(config, room) as gw:
        holder = _hold_write_lock(config.path(config.spool.database), 2.0)
        try:
            image = gw.expose(gw.open_exam(None))  # BEGIN IMMEDIATE waits out the other writer
        finally:
            holder.communicate("", timeout=30)
        assert len(room.pulses) == 4 + 1 and gw.spool.instance(image.instance.sop_instance_uid) is not None


def test_a_database_locked_beyond_the_busy_timeout_refuses_the_exposure(tmp_path: Path, room: SimRoom) -> None:
    config = config_for(tmp_path, room, db_busy_timeout_s=0.3)
    with calibrated(config, room) as gw:
        holder = _hold_write_lock(config.path(config.spool.database), None)
        try:
            refused_without_dose(gw, room, r"state database .* cannot be written: database is locked")
        finally:
            holder.communicate("", timeout=30)
        gw.expose(gw.open_exam(None))  # the other process let go: exposures work again


def _rewrite_calibration(gw: Gateway, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    """Replace arrays of the stored calibration set and re-sign its manifest, as a buggy tool
    or an older dxgate could have written them (checksums valid, content wrong)."""
    key = gw.calibration_key
    set_dir = gw.calibrations.directory / key.detector_serial / key.mode / str(gw.calibrations.latest_id(key))
    arrays = {n: np.load(set_dir / f"{n}.npy") for n in ("offset", "gain", "defects")}
    change(arrays)
    manifest = json.loads((set_dir / "manifest.json").read_bytes())
    manifest.pop("manifest_sha256")
    for name, arr in arrays.items():
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        (set_dir / f"{name}.npy").write_bytes(buf.getvalue())
        manifest["files"][f"{name}.npy"] = {"sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
                                           "dtype": str(arr.dtype), "shape": list(arr.shape)}
    manifest["shape"] = list(arrays["gain"].shape)
    (set_dir / "manifest.json").write_bytes(calibration_store._manifest_bytes(manifest))


@pytest.mark.parametrize("damage, match", [
    (lambda a: a.update(gain=np.zeros_like(a["gain"])), r"gain map has \d+ good pixels outside"),
    (lambda a: a["gain"].__setitem__((5, 5), np.nan), r"gain map holds 1 NaN or infinite values"),
    (lambda a: a["offset"].__setitem__((0, 0), np.inf), r"offset map holds 1 NaN or infinite values"),
    (lambda a: a.update(offset=np.zeros((192, 192), np.float32), gain=np.ones((192, 192), np.float32),
                        defects=np.zeros((192, 192), np.uint8)), r"is 192x192, mode 8x8 reads 384x384"),
], ids=["all-zero-gain", "nan-gain", "inf-offset", "other-mode-shape"])
def test_a_calibration_that_would_spoil_the_image_refuses_the_exposure(
        tmp_path: Path, room: SimRoom, damage: Callable[[dict[str, np.ndarray]], None], match: str) -> None:
    config = config_for(tmp_path, room)
    with calibrated(config, room) as gw:
        gw.pipeline._corrector = None  # as after a restart: the set is read from disk
        _rewrite_calibration(gw, lambda a: (a.update({k: v.copy() for k, v in a.items()}), damage(a)))
        refused_without_dose(gw, room, match)


@pytest.mark.parametrize("technique", [Technique(kvp=float("nan"), mas=2.0), Technique(kvp=-80.0, mas=2.0),
                                       Technique(kvp=80.0, mas=float("inf")), Technique(kvp=80.0, mas=1e12)],
                         ids=["nan-kv", "negative-kv", "inf-mas", "huge-mas"])
def test_an_insane_technique_is_refused_before_the_tube_fires(
        tmp_path: Path, room: SimRoom, technique: Technique) -> None:
    with calibrated(config_for(tmp_path, room), room) as gw:
        pulses = len(room.pulses)
        with pytest.raises(ExposureRefused, match=r"technique (kV|mAs) .* is outside"):
            gw.expose(gw.open_exam(None), technique)
        assert len(room.pulses) == pulses


def test_an_image_no_destination_would_take_is_refused_before_the_tube_fires(tmp_path: Path, room: SimRoom) -> None:
    """Routing filters that admit no chest: the exposure is refused, not made and then stranded."""
    config = config_for(tmp_path, room)
    hands_only = tuple(d.model_copy(update={"only_body_parts": ("HAND",)}) for d in config.destinations)
    with calibrated(config.model_copy(update={"destinations": hands_only}), room) as gw:
        pulses = len(room.pulses)
        with pytest.raises(ExposureRefused, match="no destination takes this object .* body part CHEST"):
            gw.expose(gw.open_exam(None))
        assert len(room.pulses) == pulses
        gw.expose(gw.open_exam(None), anatomy=Anatomy("HAND", "PA", "L"))  # a hand goes where hands go
        assert len(room.pulses) == pulses + 1
        [delivery] = gw.spool.listing()
        assert delivery.destination == "pacs"


# --- after the dose ---------------------------------------------------------------------------


def test_a_garbled_expose_reply_gives_an_image_with_the_dose_marked_unknown(
        tmp_path: Path, room: SimRoom, dciodvfy: Callable[[Path], None]) -> None:
    with calibrated(config_for(tmp_path, room), room) as gw:
        pulses = len(room.pulses)
        gw.sequence.subscribe(lambda state, _: room.generator.garble_next_reply(1) if state.value == "exposing"
                              else None)
        image = gw.expose(gw.open_exam(None))
        assert len(room.pulses) == pulses + 1
        assert not image.exposure.dose_known
        assert [a.code for a in gw.alarms.active()] == ["dose-unknown"]
        assert gw.raw_store.pending() == []  # imaged: the raw record is gone
    ds = pydicom.dcmread(image.instance.path)
    assert "KVP" not in ds and "ExposureInuAs" not in ds and "ImageAndFluoroscopyAreaDoseProduct" not in ds
    assert ds.ImageComments.startswith("Exposure data incomplete: dose unknown")
    dciodvfy(Path(image.instance.path))


def test_an_absurd_readback_and_timestamp_stay_out_of_the_object(
        tmp_path: Path, room: SimRoom, dciodvfy: Callable[[Path], None]) -> None:
    with calibrated(config_for(tmp_path, room), room) as gw:
        room.generator.readback_next("nan,-5,1e12,0.0123")
        room.panel.set_timestamp_us(2**64 - 1)
        image = gw.expose(gw.open_exam(None))
        assert sorted(a.code for a in gw.alarms.active()) == ["dose-readback-invalid", "frame-flagged"]
        assert gw.sequence.state.value == "idle"
    ds = pydicom.dcmread(image.instance.path)
    assert "KVP" not in ds and "Exposure" not in ds and "ExposureTime" not in ds
    assert float(ds.ImageAndFluoroscopyAreaDoseProduct) == pytest.approx(0.0123)
    dciodvfy(Path(image.instance.path))


def test_a_failure_after_the_dose_keeps_the_frame_and_reprocess_makes_its_image(
        tmp_path: Path, room: SimRoom, monkeypatch: pytest.MonkeyPatch, dciodvfy: Callable[[Path], None]) -> None:
    config = config_for(tmp_path, room)
    config = config.model_copy(update={"destinations": tuple(d.model_copy(update={"for_processing": True})
                                                             for d in config.destinations)})
    real_build = imaging.build_dx
    with calibrated(config, room) as gw:
        pulses = len(room.pulses)

        def broken(*args: object, **kwargs: object) -> object:
            raise RuntimeError("injected DICOM builder bug")

        monkeypatch.setattr(imaging, "build_dx", broken)
        exam = gw.open_exam(None)
        with pytest.raises(FrameKeptError, match="X-rays were given and frame .* is kept as") as err:
            gw.expose(exam)
        assert len(room.pulses) == pulses + 1
        kept_id = err.value.kept_id
        [pending] = gw.raw_store.pending()
        assert pending.kept_id == kept_id and "injected DICOM builder bug" in pending.reason
        assert [a.code for a in gw.alarms.active()] == ["image-not-made"]
        assert sum(gw.spool.counts().values()) == 0
        kept_frame = gw.raw_store.load(kept_id).frame

        monkeypatch.setattr(imaging, "build_dx", real_build)  # the cause is fixed
        [result] = gw.reprocess()
        assert (result.kept_id, result.outcome) == (kept_id, "saved")
        assert gw.raw_store.pending() == [] and gw.alarms.active("image-not-made") == []
        instance = gw.spool.instance(result.sop_instance_uid)
        assert instance is not None and gw.spool.counts()["pending"] == 2  # For Presentation and For Processing
        [linear] = [d for d in gw.spool.listing() if d.sop_instance_uid != result.sop_instance_uid]
        expected = gw.corrector().apply(kept_frame).pixels
    ds = pydicom.dcmread(instance.path)
    assert ds.StudyInstanceUID == exam.study_uid and ds.SeriesInstanceUID == exam.series_uid
    assert ds.PixelIntensityRelationship == "LOG"  # presentation processed
    raw = pydicom.dcmread(linear.path)
    assert raw.PresentationIntentType == "FOR PROCESSING" and raw.AcquisitionDateTime == ds.AcquisitionDateTime
    assert np.array_equal(raw.pixel_array, expected)  # the image is the kept frame, corrected
    kerma = room.pulses[-1][2]  # and that frame holds the pulse the generator gave (simulator truth)
    truth = room.model(MODE).truth
    signal = (kept_frame.pixels.astype(np.float64) - truth.offset)[~truth.defective].mean()
    assert signal > 0.05 * room.model(MODE).counts_per_ugy * kerma  # exposed through the phantom, not dark
    dciodvfy(Path(instance.path))


def test_dxgate_reprocess_makes_the_image_in_a_new_process_without_hardware(
        tmp_path: Path, room: SimRoom, monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_for(tmp_path, room)
    with calibrated(config, room) as gw:
        monkeypatch.setattr(imaging, "build_dx", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
        with pytest.raises(FrameKeptError) as err:
            gw.expose(gw.open_exam(None))
    monkeypatch.undo()
    room.close()  # no hardware at all from here on
    path = tmp_path / "dxgate.toml"
    path.write_text(to_toml(config))
    exe = Path(sys.executable).parent / "dxgate"
    listed = subprocess.run([str(exe), "reprocess", "--config", str(path), "--list"], capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0 and err.value.kept_id in listed.stdout and "RuntimeError: bug" in listed.stdout
    done = subprocess.run([str(exe), "reprocess", "--config", str(path), "--json"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)
    assert (result["kept_id"], result["outcome"]) == (err.value.kept_id, "saved")
    pipeline = imaging.ImagePipeline(config, alarms=Alarms())
    try:
        assert pipeline.spool.instance(result["sop_instance_uid"]) is not None  # the spool's own view
        assert pipeline.reprocess() == []  # nothing left; a second run makes nothing twice
    finally:
        pipeline.close()


def test_when_even_the_raw_record_cannot_be_written_the_frame_is_held_and_exposures_refused(
        tmp_path: Path, room: SimRoom, mounts: Mounts, monkeypatch: pytest.MonkeyPatch) -> None:
    raw_fs = mounts.tmpfs("raw", size="16m")
    config = config_for(tmp_path, room, raw_directory=str(raw_fs / "raw"))
    with calibrated(config, room) as gw:
        monkeypatch.setattr(imaging, "build_dx", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
        pulses = len(room.pulses)
        # the raw file system goes read-only between the check and the write (after the pulse)
        gw.sequence.subscribe(lambda state, _: mounts.remount_ro(raw_fs) if state.value == "readout" else None)
        with pytest.raises(FrameKeptError, match="held in memory only"):
            gw.expose(gw.open_exam(None))
        assert len(room.pulses) == pulses + 1
        assert [a.code for a in gw.alarms.active()] == ["frame-not-kept"]
        gw.sequence._listeners.clear()
        refused_without_dose(gw, room, r"held in memory")
        subprocess.run(["mount", "-o", "remount,rw", str(raw_fs)], check=True)
        monkeypatch.undo()
        gw.expose(gw.open_exam(None))  # the held frame is written first, then this exposure proceeds
        assert [k.reason for k in gw.raw_store.pending()] == [""]
        [result] = gw.reprocess()
        assert result.outcome == "saved"
        assert gw.spool.counts()["pending"] == 2


# --- the state directory ------------------------------------------------------------------------


def test_an_existing_state_directory_keeps_its_mode_and_the_database_is_owner_only(
        tmp_path: Path, room: SimRoom) -> None:
    home = tmp_path / "shared"
    home.mkdir()
    home.chmod(0o1777)  # like /tmp
    config = config_for(tmp_path, room).model_copy(update={"state_dir": str(home)})
    with calibrated(config, room) as gw:
        gw.expose(gw.open_exam(None))
    assert stat.S_IMODE(home.stat().st_mode) == 0o1777
    for name in ("spool", "raw", "calibration"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o700
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        p = home / name
        if p.exists():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, name
    assert (home / "state.db").exists()
