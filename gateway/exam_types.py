"""The data of the technologist's exam: the exam, the chosen view, acquired and reviewed images, their bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from gateway.dicom import IrradiationEvent
from gateway.errors import ConfigError
from gateway.mpps import PerformedImage
from gateway.types import (
    Anatomy,
    CorrectedFrame,
    DetectorInfo,
    Exposure,
    ExposureIndex,
    SpooledInstance,
    Technique,
    WorklistItem,
)

# Techniques outside these are refused before the tube fires (the configuration's own bounds).
KVP_RANGE = (40.0, 150.0)
MAS_RANGE = (0.1, 500.0)

PREVIEWS_KEPT = 32
DOSE_REPORT_PROTOCOL = "X-Ray Radiation Dose Report"  # the dose report's series in the MPPS (Protocol Name, Type 1)
RECHECK_S = 5.0  # how often a release waiting for the hand switch re-checks that its image can be kept

REVIEW_STATES = ("new", "accepted", "rejected")


@dataclass
class Exam:
    """One procedure at the console: its study and series identity, assigned once."""

    item: WorklistItem | None
    study_uid: str
    series_uid: str
    series_number: int = 1
    images: list[SpooledInstance] = field(default_factory=list)
    operator: str = ""  # the technologist who opened it (Operators' Name)
    pps_id: str = ""  # Performed Procedure Step ID (SH), assigned at opening
    pps_start: datetime | None = None  # set at the first exposure: every image of the step agrees
    mpps_uid: str = ""  # the MPPS SOP Instance UID when MPPS is reported ("" otherwise)
    mpps_created: bool = False  # its N-CREATE is queued (at the first saved image)
    performed: list[PerformedImage] = field(default_factory=list)  # every exposure's image, for the N-SET
    irradiations: list[IrradiationEvent] = field(default_factory=list)  # every exposure given, for the dose report
    dose_series_uid: str = ""  # the dose report's series and SOP Instance UIDs, assigned at opening
    dose_report_uid: str = ""
    detector: DetectorInfo | None = None  # the detector of its exposures (the dose report's equipment)
    reopened: bool = False  # the append case: a closed exam's study opened again (a new series)


@dataclass(frozen=True)
class AcquiredImage:
    """An exposure that is saved: durable in the spool, queued for every destination."""

    instance: SpooledInstance
    exposure: Exposure
    exposure_index: ExposureIndex | None  # None: not computable (e.g. saturated centre); image kept
    frame: CorrectedFrame
    stage_seconds: dict[str, float]  # acquire, keep, correct, present, build, spool: where the latency goes
    kept_id: str = ""  # the raw record kept through the image's making ("" if it could not be written)
    display: np.ndarray | None = None  # the processed For Presentation pixels, when processing is on
    processing_uid: str = ""  # the exposure's DX For Processing image, when one was saved


@dataclass(frozen=True)
class ViewChoice:
    """The view the technologist selected for the next exposures of the open exam."""

    anatomy: Anatomy
    technique: Technique
    target_ei: float
    protocol: str = ""  # the protocol table's name, when chosen from it


@dataclass
class ReviewedImage:
    """An image of the open exam and the technologist's verdict on it. The exam keeps what the
    console shows (a PNG preview, for the latest PREVIEWS_KEPT images), never the full frame, so
    memory stays flat however many exposures an exam takes."""

    instance: SpooledInstance
    exposure: Exposure
    exposure_index: ExposureIndex | None
    view: ViewChoice
    preview: bytes | None = None
    status: str = "new"  # new, accepted, rejected
    reason: str = ""
    processing_uid: str = ""  # the same exposure's For Processing image: the verdict is the exposure's


def check_technique(technique: Technique, target_ei: float) -> None:
    """Refuse a technique or target exposure index outside the room's bounds (ConfigError)."""
    if not (isinstance(target_ei, (int, float)) and math.isfinite(target_ei) and target_ei > 0):
        raise ConfigError(f"target exposure index {target_ei!r} must be a positive number")
    for name, value, (lo, hi) in (("kV", technique.kvp, KVP_RANGE), ("mAs", technique.mas, MAS_RANGE)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
            raise ConfigError(f"technique {name} {value!r} is outside [{lo:g}, {hi:g}]")
