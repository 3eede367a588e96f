"""`dxgate demo`, as `make demo` runs it: a real process, real files, valid DICOM."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pydicom

from gateway.config import load


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "dxgate"
    # -vv: DEBUG logs from every module (pynetdicom's too), the most a log could leak
    return subprocess.run([str(exe), "-vv", "demo", *args], capture_output=True, text=True, timeout=120)


def test_demo_acquires_forwards_and_keeps_everything_under_home(
        tmp_path: Path, dciodvfy: Callable[[Path], None]) -> None:
    home = tmp_path / "home"
    out = run_demo("--home", str(home), "--json", "-n", "2")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["home"] == str(home) and result["calibrated_now"] is True
    images = result["images"]
    assert len(images) == 2 and all(i["status"] == "demo-pacs:sent" for i in images)
    assert all(i["accession_number"] for i in images)
    assert all(200 < i["exposure_index"] < 800 for i in images)
    received = {pydicom.dcmread(p).SOPInstanceUID: p for p in (home / "pacs").glob("*.dcm")}
    assert set(received) == {i["sop_instance_uid"] for i in images}
    for uid, path in received.items():
        ds = pydicom.dcmread(path)
        assert ds.AccessionNumber == next(i["accession_number"] for i in images if i["sop_instance_uid"] == uid)
        dciodvfy(path)
    config = load(home / "dxgate.toml")  # the configuration the run used is kept and valid
    assert config.state_dir == str(home)
    assert (home / "state.db").exists() and any((home / "calibration").rglob("manifest.json"))
    assert "DEBUG" in out.stderr and "sent " in out.stderr  # the logs did talk about the images...
    for ds in map(pydicom.dcmread, received.values()):  # ...but never about the patient (invariant 7)
        for value in (str(ds.PatientName), *str(ds.PatientName).split("^"), ds.PatientID, ds.PatientBirthDate):
            assert value not in out.stderr, f"patient data {value!r} in the logs"

    again = run_demo("--home", str(home), "-n", "1", "--once")  # a second run reuses the calibration
    assert again.returncode == 0, again.stderr
    assert "calibration reused" in again.stdout
    assert len(list((home / "pacs").glob("*.dcm"))) == 3


def test_demo_without_home_prints_where_it_left_everything(tmp_path: Path) -> None:
    out = subprocess.run([str(Path(sys.executable).parent / "dxgate"), "demo", "-n", "1", "--once"],
                         capture_output=True, text=True, timeout=120,
                         env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("everything this run made is under ")
    home = Path(last.removeprefix("everything this run made is under "))
    assert home.parent == tmp_path and len(list((home / "pacs").glob("*.dcm"))) == 1
