"""Sections for the room's hardware: site identity, detector, generator, calibration and QA limits."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictInt, StrictStr, model_validator

from gateway.config.fields import (
    AETitle,
    Number,
    RegisteredName,
    StatePath,
    Text16,
    Text64,
    _finite_tree,
    _no_controls,
    _not_blank,
    _optional_name,
    _Section,
    _uid_root,
)


class SiteConfig(_Section):
    ae_title: AETitle = Field("DXGATE", description="This gateway's own AE title (calling AE; the worklist "
                                                    "query key when worklist.match_station_ae is set).")
    station_name: Text16 = Field("DXROOM1", description="Station Name written into every image.")
    institution_name: Text64 = Field("", description="Institution Name written into every image.")
    manufacturer: Text64 = Field("dxgate", description="Manufacturer written into every image.")
    model_name: Text64 = Field("dxgate", description="Manufacturer Model Name written into every image (the "
                                                     "room's system model).")
    device_serial: Text64 = Field("", description="Device Serial Number of this X-ray system (empty: left out; "
                                                  "the detector's own serial is written as Detector ID).")
    department_name: Text64 = Field("", description="Institutional Department Name written into every image.")
    uid_root: Annotated[StrictStr, AfterValidator(_uid_root)] = Field(
        "2.25", description="UID root for generated UIDs; 2.25 derives them from UUIDs.")


class DetectorConfig(_Section):
    driver: RegisteredName = Field("usb_panel", description="Detector driver, by its registered name (entry "
                                                           "point group dxgate.detectors).")
    vendor_id: StrictInt = Field(0x1209, ge=0, le=0xFFFF, description="USB vendor ID to look for.")
    product_id: StrictInt = Field(0x0001, ge=0, le=0xFFFF, description="USB product ID to look for.")
    serial: Annotated[StrictStr, AfterValidator(_no_controls)] = Field(
        "", description="Only use the panel with this serial number (empty: the first found).")
    mode: Annotated[StrictStr, AfterValidator(_not_blank), AfterValidator(_no_controls)] = Field(
        "2x2", description="Readout mode name (the detector lists its modes).")
    usb_backend: Annotated[StrictStr, AfterValidator(_optional_name)] = Field(
        "", description="pyusb backend by registered name (entry point group dxgate.usb_backends); empty: libusb.")
    backend_options: Annotated[dict[StrictStr, Any], AfterValidator(_finite_tree)] = Field(
        default_factory=dict, description="Keyword arguments for the usb_backend factory.")
    frame_timeout_s: Number = Field(10.0, ge=0.1, le=600, description="Longest wait for a frame after arming.")
    read_attempts: StrictInt = Field(3, ge=1, le=10, description="How often a corrupt frame is re-read before failing.")


class GeneratorConfig(_Section):
    driver: RegisteredName = Field("serial_generator", description="Generator driver, by its registered name "
                                                                   "(entry point group dxgate.generators).")
    port: Annotated[StrictStr, AfterValidator(_not_blank), AfterValidator(_no_controls)] = Field(
        "/dev/ttyUSB0", description="Serial device of the generator (or a pyserial URL).")
    baudrate: StrictInt = Field(115200, ge=1200, le=4_000_000, description="Serial speed.")
    timeout_s: Number = Field(5.0, ge=0.1, le=120, description="Longest wait for a generator reply.")


class CalibrationLimitsConfig(_Section):
    dark_mean_max: Number = Field(16000.0, ge=0, le=65535, description="Darks reading more (counts) saw light.")
    dark_sd_max: Number = Field(40.0, gt=0, le=65535, description="Darks noisier (median pixel SD) saw light.")
    dark_frame_spread: Number = Field(20.0, gt=0, le=65535,
                                      description="A dark frame this many counts above the darks' median saw light.")
    flat_median_min: Number = Field(500.0, ge=0, le=65535, description="Least median flat signal (counts).")
    flat_median_max: Number = Field(45000.0, gt=0, le=65535, description="Most median flat signal (counts).")
    flat_local_nonuniformity: Number = Field(
        0.05, gt=0, le=1, description="A region of a flat this far (fraction) from its surroundings: object in beam.")

    @model_validator(mode="after")
    def _window(self) -> CalibrationLimitsConfig:
        if self.flat_median_min >= self.flat_median_max:
            raise ValueError(f"flat_median_min {self.flat_median_min:g} must lie below flat_median_max "
                             f"{self.flat_median_max:g}")
        return self


class QaLimitsConfig(_Section):
    """Pass/fail limits of `dxgate qa` (AAPM TG-150 method on corrected flats, 100x100-pixel ROIs)."""

    global_signal_nonuniformity: Number = Field(0.02, gt=0, le=1, description="(max-min)/mean of ROI means.")
    local_signal_nonuniformity: Number = Field(0.01, gt=0, le=1, description="Largest ROI-to-neighbour difference.")
    global_noise_nonuniformity: Number = Field(0.15, gt=0, le=10, description="(max-min)/mean of ROI SDs.")
    local_noise_nonuniformity: Number = Field(0.10, gt=0, le=10, description="Largest ROI-to-neighbour SD difference.")
    global_snr_nonuniformity: Number = Field(0.15, gt=0, le=10, description="(max-min)/mean of ROI SNRs.")
    local_snr_nonuniformity: Number = Field(0.10, gt=0, le=10, description="Largest ROI-to-neighbour SNR difference.")
    max_defect_fraction: Number = Field(0.01, ge=0, le=1, description="Most defective pixels (fraction of all).")
    max_cluster_pixels: StrictInt = Field(50, ge=0, description="Largest acceptable defect cluster (pixels).")
    max_linearity_deviation: Number = Field(0.05, gt=0, le=1,
                                            description="Largest deviation of signal from a line through 0 vs mAs.")


class CalibrationConfig(_Section):
    directory: StatePath = Field("calibration", description="Where calibration sets live (relative: under state_dir).")
    dark_frames: StrictInt = Field(32, ge=2, le=256,
                                   description="Dark frames averaged into the offset map (robust mean: 5+ leave out "
                                               "each pixel's extremes; 16+ find noisy pixels).")
    flat_frames: StrictInt = Field(16, ge=2, le=256, description="Flat-field frames averaged into the gain map.")
    lag_dark_frames: StrictInt = Field(1, ge=0, le=16,
                                       description="Dark frames right after the last flat, for lag (0: not measured).")
    qa_flat_frames: StrictInt = Field(2, ge=1, le=64, description="Flat-field frames `dxgate qa` takes.")
    gain_dose_factors: tuple[Annotated[Number, Field(gt=0, le=20)], ...] = Field(
        (), max_length=8, description="Multi-point gain: flats also at these multiples of flat_mas (two or more, "
                                      "none equal to 1), each pixel's response then corrected piecewise-linearly "
                                      "between the levels; empty: a single gain map.")
    offset_refresh_h: Number = Field(0.0, ge=0, le=24 * 30,
                                     description="Idle offset refresh: dark frames renew the offset map (a new set "
                                                 "version, same gain) this many hours after the last set, once "
                                                 "the room is idle; never while an exam is open or armed (0: off).")
    offset_refresh_idle_min: Number = Field(10.0, ge=0, le=24 * 60,
                                            description="The room counts as idle once no exam has been open or armed "
                                                        "for this many minutes.")
    gain_level_frames: StrictInt = Field(8, ge=2, le=256, description="Flat-field frames at each further dose level "
                                                                      "of a multi-point gain.")
    qa_dose_factors: tuple[Annotated[Number, Field(gt=0, le=10)], ...] = Field(
        (0.5, 1.0, 2.0), max_length=8, description="`dxgate qa` linearity: one flat at each of these multiples of "
                                                   "flat_mas (fewer than two: not measured).")
    qa_directory: StatePath = Field("qa", description="Where QA reports are kept, for the trend (relative: under "
                                                      "state_dir).")
    limits: CalibrationLimitsConfig = Field(default_factory=CalibrationLimitsConfig,
                                            description="Acceptance limits on calibration frames.")
    qa_limits: QaLimitsConfig = Field(default_factory=QaLimitsConfig, description="Pass/fail limits of `dxgate qa`.")
    flat_kvp: Number = Field(70.0, ge=40, le=150, description="Tube voltage for flat-field exposures.")
    flat_mas: Number = Field(2.0, ge=0.1, le=100, description="Tube current-time product for flat-field exposures.")
    flat_kerma_ugy: Number = Field(10.0, ge=0.01, le=1000,
                                  description="Detector air kerma of one flat field, measured by the engineer (uGy).")
    max_age_days: Number = Field(180.0, ge=1, le=3650, description="Refuse a calibration set older than this.")
    warn_age_days: Number = Field(
        0.0, ge=0, le=3650, description="Warn (before each exposure) about a set older than this; it is still "
                                        "used until max_age_days (0: no warning).")
    warn_temperature_drift_c: Number = Field(
        5.0, ge=0, le=50, description="Warn (before each exposure) when the panel's temperature is this far from "
                                      "the one its offset was made at (0: no warning).")
    max_temperature_drift_c: Number = Field(
        0.0, ge=0, le=50, description="Refuse an exposure, before the tube fires, when the panel's temperature is "
                                      "this far from its offset's: recalibrate or refresh the offset first "
                                      "(0: drift only warns).")
