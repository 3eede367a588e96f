"""`python -m hw_sim` runs the simulator process; `python -m hw_sim ctl` drives it: placing a
phantom, collimating and pressing the hand switch reach the frame the real driver reads."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers import registry
from drivers.usb_panel.driver import UsbPanelDetector
from gateway.types import FrameKind, Technique
from hw_sim.collimation import SCATTER_FRACTION
from hw_sim.detector_model import TEMPERATURE_DRIFT, DetectorModel
from hw_sim.room import kerma_at_detector_ugy

MODE, SEED = "8x8", 7


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Path]:
    proc = subprocess.Popen([sys.executable, "-m", "hw_sim", "--dir", str(tmp_path), "--modes", MODE,
                             "--seed", str(SEED)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())  # one line once everything listens
        assert info["pid"] == proc.pid
        yield tmp_path
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None
        proc.stdout.close()


def ctl(directory: Path, *args: str, ok: bool = True) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "hw_sim", "ctl", "--dir", str(directory), *args],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode == 0) is ok, done.stderr
    return json.loads(done.stdout) if ok else {"stderr": done.stderr}


def test_ctl_places_collimates_and_presses_what_the_driver_reads(sim: Path) -> None:
    assert ctl(sim, "place", "qc")["ok"] is True
    assert "unknown scene 'knee'" in ctl(sim, "place", "knee", ok=False)["stderr"]
    assert ctl(sim, "collimate", "--fractions", "0.25", "0.25", "0.75", "0.5")["field_mm"] is not None
    assert ctl(sim, "temperature", "31.5")["ok"] is True
    status = ctl(sim, "status")
    assert (status["scene"], status["temperature_c"]) == ("qc", 31.5)
    truth = ctl(sim, "truth", "--mode", MODE)["truth"]
    assert truth["field_pixels"] == [96, 192, 96, 288] and truth["scene"] == "qc"
    ctl(sim, "call", "crc_errors", "n=0")  # any operation, fields as JSON

    port = json.loads((sim / "sim.json").read_text())["generator_port"]
    backend = registry.open_usb_backend("socket", path=str(sim / "usb.sock"))
    det: UsbPanelDetector = registry.open_detector("usb_panel", backend=backend, mode=MODE)
    gen = registry.open_generator("serial_generator", port=port)
    try:
        gen.set_technique(Technique(kvp=80.0, mas=10.0))
        det.arm(FrameKind.EXPOSED)
        gen.enable_hand_switch()
        assert ctl(sim, "press")["fired"] is True  # the technologist, through the control CLI
        readback = gen.wait_hand_switch(10.0)
        assert readback is not None
        raw = det.read_frame(30.0).pixels.astype(np.float64)
    finally:
        gen.close()
        det.close()
        backend.close()  # type: ignore[attr-defined]
    kerma = ctl(sim, "pulses")["pulses"][-1][2]
    assert kerma == pytest.approx(kerma_at_detector_ugy(readback.kvp, readback.mas), rel=1e-3)
    # The same seed is the same panel: its truth, rebuilt here, turns the frame into transmission.
    model = DetectorModel(MODE, SEED, temperature_c=30.0)
    good = ~model.truth.defective
    drift = TEMPERATURE_DRIFT * (31.5 - 30.0)
    t = (raw - model.truth.offset - drift) / (model.counts_per_ugy * np.where(good, model.truth.gain, 1.0) * kerma)
    inside = np.zeros(t.shape, bool)
    inside[96:192, 96:288] = True
    assert float(t[~inside & good].mean()) == pytest.approx(SCATTER_FRACTION, rel=0.03)
    assert float(t[inside & good].mean()) < 0.9  # the phantom's plate and inserts, in the field
    assert ctl(sim, "collimate", "--open")["field_mm"] is None


def test_ctl_without_a_simulator_says_so(tmp_path: Path) -> None:
    assert "no simulator running" in ctl(tmp_path, "status", ok=False)["stderr"]
