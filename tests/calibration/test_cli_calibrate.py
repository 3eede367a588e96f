"""`dxgate calibrate --yes` and `dxgate qa --yes` as an engineer runs them: a separate process on
the simulated room (its own process, reached through the USB socket backend and the generator's
pty), no daemon. Checked against the simulator's ground truth and the store's own view."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from gateway.config import (
    ApiConfig,
    CalibrationConfig,
    Config,
    DetectorConfig,
    GeneratorConfig,
    SpoolConfig,
    load,
    to_toml,
)
from gateway.correction import CalibrationStore, DefectClass
from gateway.dicom import DX_FOR_PROCESSING
from gateway.types import CalibrationKey
from hw_sim.detector_model import DetectorModel
from tests.peers import free_port
from tests.service.processes import DaemonProcess, SimProcess

SEED = 5
DXGATE = [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())"]


@pytest.fixture
def room(tmp_path: Path) -> Iterator[tuple[SimProcess, Path]]:
    sim = SimProcess(tmp_path / "sim").start("--seed", str(SEED))
    cfg = Config(state_dir=str(tmp_path / "state"),
                 detector=DetectorConfig(mode="8x8", usb_backend="socket",
                                         backend_options={"path": sim.info["usb_socket"]}),
                 generator=GeneratorConfig(port=sim.info["generator_port"]),
                 calibration=CalibrationConfig(dark_frames=8, flat_frames=4, qa_flat_frames=2),
                 spool=SpoolConfig(min_free_mb=0), api=ApiConfig(port=free_port()))
    path = tmp_path / "dxgate.toml"
    path.write_text(to_toml(cfg))
    try:
        yield sim, path
    finally:
        sim.stop()


def _dxgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DXGATE, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          check=False)


def test_calibrate_then_qa_without_prompts(room: tuple[SimProcess, Path], tmp_path: Path) -> None:
    sim, config = room
    done = _dxgate("calibrate", "--config", str(config), "--yes", "--json", "--operator", "fe-1", "--flats", "5")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["frames"] == {"dark": 8, "flat": 5, "lag": 1}
    assert len(sim.call("pulses")["pulses"]) == 5  # one X-ray pulse per flat, none for darks
    store = CalibrationStore(tmp_path / "state" / "calibration")
    cal = store.load(CalibrationKey("SIM-0001", "8x8"))
    assert cal.calibration_id == summary["calibration_id"]
    assert cal.provenance["operator"] == "fe-1"
    truth = DetectorModel("8x8", SEED).truth
    for name, code in (("dead", DefectClass.DEAD), ("hot", DefectClass.HOT), ("lag", DefectClass.LAG),
                       ("line", DefectClass.LINE), ("cluster", DefectClass.CLUSTER)):
        true = getattr(truth, name)
        assert np.array_equal(cal.defects == code, true), name

    report_file = tmp_path / "qa.json"
    page = tmp_path / "qa.html"
    qa = _dxgate("qa", "--config", str(config), "--yes", "--json", "--out", str(report_file), "--html", str(page))
    assert qa.returncode == 0, qa.stdout + qa.stderr
    report = json.loads(qa.stdout)
    assert report == json.loads(report_file.read_text())
    assert report["passed"] is True and report["calibration_id"] == cal.calibration_id
    assert report["uniformity"]["global_signal"] <= 0.01
    assert report["defect_counts"] == cal.defect_counts()
    assert report["largest_cluster"] == max(len(c) for c in truth.clusters)
    # Linearity: 2 uniformity flats, then one flat at 0.5, 1 and 2 x the flat mAs; the simulated panel is linear.
    pulses = sim.call("pulses")["pulses"][5:]  # (kV, mAs, air kerma) as the simulated room delivered them
    assert len(pulses) == 5 and [round(p[1]) for p in pulses] == [2, 2, 1, 2, 4]
    lin = report["linearity"]
    assert lin["mas"] == pytest.approx([p[1] for p in pulses[2:]], rel=0.002)  # readback mAs, as delivered
    per_ugy = [s / p[2] for s, p in zip(lin["signal"], pulses[2:], strict=True)]  # against the true kerma
    assert max(per_ugy) / min(per_ugy) < 1.01  # the measured response is linear in dose
    assert lin["r_squared"] > 0.999 and lin["max_deviation"] < 0.05  # the kV spread of the generator adds
    text = page.read_text()
    embedded = re.search(r'<script type="application/json" id="figures">(.*?)</script>', text, re.S)
    assert embedded and json.loads(embedded.group(1).replace("<\\/", "</")) == report
    assert text.count("src='data:image/png;base64,") == 4 and text.count("<svg") == 2  # self-contained
    assert "http" not in text.replace("http://www.w3.org/2000/svg", "")

    human = _dxgate("qa", "--config", str(config), "--yes", "--save-dicom", str(tmp_path / "qa-dicom"))
    assert human.returncode == 0 and "RESULT: PASS" in human.stdout
    saved = list((tmp_path / "qa-dicom").glob("*.dcm"))  # the 2 uniformity flats (tests/qa/test_qa_dicom.py)
    assert len(saved) == 2 and all(pydicom.dcmread(p).SOPClassUID == DX_FOR_PROCESSING for p in saved)
    # The trend: the first report's figure stands in the "previous" column of the second.
    first = next(c for c in report["checks"] if c["name"] == "global signal nonuniformity")
    row = next(line for line in human.stdout.splitlines() if line.startswith("global signal nonuniformity"))
    assert row.split()[-3:-1] == [f"{100 * first['value']:.3f}", "%"]
    assert len(list((tmp_path / "state" / "qa" / "SIM-0001" / "8x8").glob("*.json"))) == 2


def test_refused_flat_named_and_nothing_stored(room: tuple[SimProcess, Path], tmp_path: Path) -> None:
    """A flat that cannot be used stops a --yes run with the reason, and no set is stored."""
    sim, config = room
    text = config.read_text().replace("flat_median_max = 45000.0", "flat_median_max = 1000.0")
    config.write_text(text)
    done = _dxgate("calibrate", "--config", str(config), "--yes")
    assert done.returncode == 2
    assert "outside the window 500..1000: adjust the mAs (less) and repeat this flat" in done.stderr
    assert not list((tmp_path / "state" / "calibration").rglob("manifest.json"))


def test_calibrate_through_the_running_daemon(room: tuple[SimProcess, Path], tmp_path: Path) -> None:
    """The daemon holds the detector: the command runs the daemon's calibration job and follows it;
    `dxgate qa` says to stop the daemon instead of fighting it for the panel."""
    sim, config = room
    daemon = DaemonProcess(config, load(config).api.port, tmp_path).start()
    try:
        done = _dxgate("calibrate", "--config", str(config), "--yes", "--json")
        assert done.returncode == 0, done.stderr + daemon.journal()[-2000:]
        job = json.loads(done.stdout)
        assert job["state"] == "done" and job["step"] == "lag"
        store = CalibrationStore(tmp_path / "state" / "calibration")
        assert store.latest_id(CalibrationKey("SIM-0001", "8x8")) == job["calibration_id"]
        qa = _dxgate("qa", "--config", str(config), "--yes")
        assert qa.returncode == 2 and "the daemon holds the detector" in qa.stderr
    finally:
        daemon.stop()
