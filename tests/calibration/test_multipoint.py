"""Multi-point gain against the simulator's ground truth: a panel whose pixels' response bends.

The simulator's nonlinearity (off by default) compresses each pixel's signal by its own
factor: s * (1 - k * s / 65535). The gain error is measured on noise-free frames made from the
truth (offset + each pixel's true response to a uniform dose): a perfect correction makes them
uniform, so every deviation is the calibration's error. A single gain map is exact only at its
flats' dose; the multi-point gain must stay close at every dose.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from gateway.app import Gateway
from gateway.config import CalibrationConfig, Config, DestinationConfig, DetectorConfig, GeneratorConfig
from gateway.correction import CalibrationBuilder, CalibrationSet, CalibrationStore, Corrector, DefectClass
from gateway.correction.compact import compact_response
from gateway.correction.multipoint import correct
from gateway.errors import CalibrationError
from gateway.types import FrameKind, FrameMeta, RawFrame
from hw_sim.detector_model import BITS_STORED, DetectorModel
from hw_sim.room import SimRoom
from tests.correction.conftest import CAL_TIME, FLAT_KERMA_UGY, Panel
from tests.peers import free_port

NONLINEARITY = 0.08  # mean compression: 5 % at 40000 counts, per-pixel SD 0.04
LEVELS_UGY = (40.0, 110.0)  # besides the reference flats at 10 uGy (4000 counts)
N_DARKS, N_FLATS = 16, 32


@pytest.fixture(scope="module")
def bent() -> Panel:
    return Panel(DetectorModel("4x4", seed=13, nonlinearity=NONLINEARITY))


@pytest.fixture(scope="module")
def sets(bent: Panel) -> tuple[CalibrationSet, CalibrationSet]:
    """(single-point, multi-point) sets from the same darks and reference flats."""
    darks, flats = bent.darks(N_DARKS), bent.flats(N_FLATS)
    levels = {k: bent.flats(N_FLATS, k) for k in LEVELS_UGY}
    made: list[CalibrationSet] = []
    for multi in (False, True):
        b = CalibrationBuilder()
        for f in darks:
            b.add_dark(f)
        b.darks_done()
        for f in flats:
            b.add_flat(f)
        if multi:
            for kerma, frames in levels.items():
                for f in frames:
                    b.add_level_flat(f, kerma)
        made.append(b.build(flat_kerma_ugy=FLAT_KERMA_UGY, now=CAL_TIME + timedelta(minutes=len(made))))
    return made[0], made[1]


def _noise_free(model: DetectorModel, kerma: float) -> RawFrame:
    """What the panel reads on average at `kerma`: the truth's offset plus each pixel's true response."""
    raw = model.truth.offset + model.response(np.float32(kerma) * model.expected_signal("open"))
    pixels = np.clip(np.rint(raw), 0, 65535).astype(np.uint16)
    meta = FrameMeta(frame_number=9999, detector_serial="SIM-0001", mode=model.mode, rows=model.rows,
                     columns=model.columns, bits_stored=BITS_STORED, kind=FrameKind.EXPOSED,
                     temperature_c=model.temperature_c, acquired_at=CAL_TIME, crc32=0)
    return RawFrame(pixels=pixels, meta=meta)


def gain_error(model: DetectorModel, cal: CalibrationSet, kerma: float) -> float:
    """RMS relative deviation from uniform of a corrected noise-free uniform exposure (good pixels)."""
    good = (cal.defects == DefectClass.GOOD) & ~model.truth.defective & ~model.truth.hot
    out = Corrector(cal).apply(_noise_free(model, kerma)).pixels[good].astype(np.float64)
    return float(np.sqrt(np.mean((out / out.mean() - 1) ** 2)))


def test_multipoint_gain_error_against_truth(bent: Panel, sets: tuple[CalibrationSet, CalibrationSet]) -> None:
    single, multi = sets
    assert single.response is None and multi.response is not None and multi.response.shape[0] == 3
    errors = {k: (gain_error(bent.model, single, k), gain_error(bent.model, multi, k))
              for k in (5.0, 25.0, 75.0, 130.0)}
    print("gain error RMS % (single, multi):", {k: (round(100 * s, 2), round(100 * m, 2)) for k, (s, m) in
                                                 errors.items()})
    for kerma in (75.0, 130.0):  # far from the reference flats: the single map is off by the bend
        s, m = errors[kerma]
        assert s > 0.015 and m < 0.008 and m < s / 3, (kerma, s, m)
    for kerma in (5.0, 25.0):
        s, m = errors[kerma]
        assert m < 0.008 and m <= s + 0.001, (kerma, s, m)  # never worse near the reference


def test_kernel_matches_the_reference_piecewise_line(bent: Panel, sets: tuple[CalibrationSet, CalibrationSet]) -> None:
    _, multi = sets
    assert multi.response is not None
    good = multi.defects == DefectClass.GOOD
    corrector = Corrector(multi)
    for kerma in (2.0, 30.0, 90.0, 140.0):  # below the first knot, between, and past the last
        raw = bent.frame(kerma)
        ref = correct(raw.pixels.astype(np.float64) - multi.offset, multi.response, multi.response_targets)
        ref = np.clip(np.rint(ref), 0, 65535)
        ref[raw.pixels == 65535] = 65535
        diff = np.abs(corrector.apply(raw).pixels[good].astype(np.int64) - ref[good])
        # Knots and slopes in fixed point, as the gain map (tests/correction/test_correction_compact.py):
        # a count either way where a value sat near .5 (below the first knot the line is taken from that knot).
        assert diff.max() <= 1 and diff.mean() < 0.03 + 4e-6 * kerma * 400, (kerma, float(diff.mean()))


def test_stored_as_format_2_and_corrects_the_same(tmp_path: Path, bent: Panel,
                                                  sets: tuple[CalibrationSet, CalibrationSet]) -> None:
    single, multi = sets
    store = CalibrationStore(tmp_path)
    single_dir, multi_dir = store.save(single), store.save(multi)
    assert json.loads((single_dir / "manifest.json").read_bytes())["format"] == 1  # readable by older dxgate
    doc = json.loads((multi_dir / "manifest.json").read_bytes())
    assert doc["format"] == 2 and len(doc["response_targets"]) == 3 and (multi_dir / "response.npy").is_file()
    assert [lv["kerma_ugy"] for lv in doc["provenance"]["gain_levels"]] == [10.0, *LEVELS_UGY]
    loaded = store.load(multi.key)
    assert loaded.calibration_id == multi.calibration_id and loaded.response_targets == multi.response_targets
    raw = bent.frame(60.0)
    np.testing.assert_array_equal(Corrector(loaded).apply(raw).pixels, Corrector(multi).apply(raw).pixels)
    (multi_dir / "response.npy").write_bytes((multi_dir / "response.npy").read_bytes()[:-8])
    with pytest.raises(CalibrationError, match="checksum mismatch in .*response.npy"):
        store.load(multi.key)


def test_too_few_or_equal_levels_refused(bent: Panel) -> None:
    b = CalibrationBuilder()
    for f in bent.darks(4):
        b.add_dark(f)
    b.darks_done()
    for f in bent.flats(2):
        b.add_flat(f)
    for f in bent.flats(2, 40.0):
        b.add_level_flat(f, 40.0)
    with pytest.raises(CalibrationError, match="flats at 3 or more dose levels, got 2"):
        b.build(flat_kerma_ugy=FLAT_KERMA_UGY, now=CAL_TIME)


@pytest.fixture
def bent_room() -> Iterator[SimRoom]:
    with SimRoom(seed=17, nonlinearity=NONLINEARITY) as room:
        yield room


def test_workflow_takes_the_configured_levels(tmp_path: Path, bent_room: SimRoom) -> None:
    config = Config(state_dir=str(tmp_path / "state"), detector=DetectorConfig(mode="8x8"),
                    generator=GeneratorConfig(port=bent_room.start_generator()),
                    calibration=CalibrationConfig(dark_frames=4, flat_frames=4, gain_dose_factors=(4.0, 11.0),
                                                  gain_level_frames=3),
                    destinations=(DestinationConfig(name="pacs", port=free_port(), called_ae="PACS"),))
    progress: list[tuple[str, int, int]] = []
    with Gateway(config, usb_backend=bent_room.usb_backend()) as gw:
        cal = gw.calibration.calibrate("fe", lambda s, d, t: progress.append((s, d, t)))
        assert cal.response is not None and cal.response.shape == (3, 384, 384)
        assert [p for p in progress if p[0] == "gain-level"][-1] == ("gain-level", 6, 6)
        # 2 mAs x 4 and x 11, as the simulated generator delivers them (within a few %)
        assert [m for _, m, _ in bent_room.pulses][-6:] == pytest.approx([8.0] * 3 + [22.0] * 3, rel=0.05)
        assert gw.corrector().cal.calibration_id == cal.calibration_id
        model = bent_room.model("8x8")
        assert gain_error(model, cal, 100.0) < 0.01


def test_knots_and_slopes_kept_compact_within_half_a_step(sets: tuple[CalibrationSet, CalibrationSet]) -> None:
    _, multi = sets
    assert multi.response is not None
    good = multi.defects == DefectClass.GOOD
    rp = compact_response(multi.response, multi.response_targets, good)
    assert (rp.knots_q.dtype, rp.slopes_q.dtype) == (np.uint16, np.uint16)
    for j in range(3):
        knot = rp.knots_q[j].astype(np.float64) * rp.knot_step[j] + rp.knot_base[j]
        assert np.abs(knot[good] - multi.response[j][good]).max() <= rp.knot_step[j] / 2 + 1e-3
        assert rp.knot_step[j] <= 0.5  # a knot to a quarter count at worst
    wide = np.array(multi.response)
    y, x = (int(v[0]) for v in np.nonzero(good))
    wide[:, y, x] = (100.0, 200.0, 65500.0)  # a top knot range over 32767 counts: float32, exact
    exact = compact_response(wide, multi.response_targets, good)
    assert exact.knots_q.dtype == np.float32 and np.array_equal(exact.knots_q, wide)
