"""The data that flows between stages: frozen dataclasses, no behaviour beyond validation.

Metadata travels with pixels (as areaDetector's NDArray does): every frame carries its
frame number, detector serial, readout mode, temperature, timestamps and, once corrected,
the calibration id and processing history.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np


class FrameKind(enum.Enum):
    """Why a frame was read: dark frames see no X-rays, exposed frames do."""

    DARK = "dark"
    EXPOSED = "exposed"


@dataclass(frozen=True)
class ReadoutMode:
    """One readout mode of a detector (binning, geometry, bit depth)."""

    mode_id: int
    name: str
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float]  # (row spacing, column spacing) at the detector
    bits_stored: int


@dataclass(frozen=True)
class DetectorInfo:
    """Identity of an attached detector, as it reports itself."""

    vendor: str
    model: str
    serial: str
    firmware: str
    modes: tuple[ReadoutMode, ...]

    def mode(self, name: str) -> ReadoutMode:
        for m in self.modes:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.modes)
        raise KeyError(f"detector {self.serial} has no readout mode {name!r} (has: {known})")


@dataclass(frozen=True)
class FrameMeta:
    """Everything known about a frame at readout."""

    frame_number: int
    detector_serial: str
    mode: str
    rows: int
    columns: int
    bits_stored: int
    kind: FrameKind
    temperature_c: float
    acquired_at: datetime
    crc32: int
    # What the driver noticed and reported but did not refuse once X-rays may have been given
    # (a frame-counter gap, a device timestamp out of range); no patient data.
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetectorStatus:
    """What the gateway shows of a detector: state ("idle", "armed", "holding", "not answering",
    "unplugged"), temperature, frames held, battery and link quality (wireless panels; None for
    a cable), firmware, and the error that explains a state the detector cannot work in."""

    state: str
    temperature_c: float | None
    over_temperature: bool
    frames_held: int
    battery_percent: int | None
    link_quality_percent: int | None
    firmware: str
    last_frame_number: int | None = None
    error: str = ""
    exposure_ready: bool = False  # EXP_OK: integrating for a synchronised exposure

    @property
    def ready(self) -> bool:
        return self.state in ("idle", "armed", "holding") and not self.over_temperature


@dataclass(frozen=True, eq=False)
class RawFrame:
    """A frame exactly as read from the detector (uint16, read-only), with its metadata."""

    pixels: np.ndarray
    meta: FrameMeta

    def __post_init__(self) -> None:
        if self.pixels.dtype != np.uint16 or self.pixels.shape != (self.meta.rows, self.meta.columns):
            raise ValueError(
                f"frame {self.meta.frame_number}: pixels {self.pixels.dtype}{self.pixels.shape} "
                f"do not match header uint16({self.meta.rows}, {self.meta.columns})"
            )
        self.pixels.flags.writeable = False


@dataclass(frozen=True, eq=False)
class CorrectedFrame:
    """A frame after offset, gain and defect correction (uint16, read-only)."""

    pixels: np.ndarray
    meta: FrameMeta
    calibration_id: str
    calibrated_at: datetime
    counts_per_ugy: float  # detector sensitivity after correction, for the exposure index
    history: tuple[str, ...]  # processing steps applied, in order

    def __post_init__(self) -> None:
        self.pixels.flags.writeable = False


@dataclass(frozen=True)
class Presentation:
    """The For Presentation pixels made from a corrected frame (gateway.presentation): log
    processed, 12-bit, more X-rays = higher value; `description` names the steps."""

    pixels: np.ndarray
    bits_stored: int
    description: str


@dataclass(frozen=True)
class Technique:
    """Exposure factors requested from the generator."""

    kvp: float
    mas: float


@dataclass(frozen=True)
class ExposureReadback:
    """What the generator reports it actually delivered; None where a value was missing or
    outside any sane range (such a value never reaches a DICOM object)."""

    kvp: float | None
    mas: float | None
    exposure_time_ms: float | None
    dap_dgy_cm2: float | None  # dose-area product (Image and Fluoroscopy Area Dose Product units)
    tube_current_ma: float | None = None  # measured mean tube current, when the generator reports it


@dataclass(frozen=True)
class Exposure:
    """One exposure: what was asked, what was delivered (None: dose unknown), and when.

    `problems` lists what went wrong with the readback (garbled, missing, out of range):
    the frame is kept all the same, because X-rays may have been delivered.
    """

    requested: Technique
    actual: ExposureReadback | None
    started_at: datetime
    problems: tuple[str, ...] = ()

    @property
    def dose_known(self) -> bool:
        return self.actual is not None and not self.problems


@dataclass(frozen=True)
class ProtocolCode:
    """A coded entry (code value, scheme designator, meaning), as in Scheduled Protocol Code Sequence."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class WorklistItem:
    """One scheduled procedure step from the Modality Worklist, all strings as UTF-8 text.

    Empty strings mean the RIS gave no value. An unscheduled exam has an empty accession
    number and no Study Instance UID (one is generated under the site's UID root).
    """

    patient_name: str
    patient_id: str
    patient_birth_date: date | None
    patient_sex: str
    accession_number: str
    study_instance_uid: str
    requested_procedure_id: str
    requested_procedure_description: str
    sps_id: str
    sps_description: str
    sps_start: datetime | None
    modality: str
    scheduled_station_ae: str
    referring_physician: str = ""
    issuer_of_patient_id: str = ""
    protocol_codes: tuple[ProtocolCode, ...] = ()  # Scheduled Protocol Code Sequence
    referenced_study_sop_instance_uid: str = ""  # Referenced Study Sequence, when the RIS sends one
    referenced_study_sop_class_uid: str = ""  # ... with the SOP class the RIS gave it
    procedure_codes: tuple[ProtocolCode, ...] = ()  # Requested Procedure Code Sequence
    # The group case (PS3.17 Annex J, IHE SWF): the other requested procedures of the same patient
    # acquired in this exam, each with its own order data; empty for a single order.
    grouped: tuple[WorklistItem, ...] = ()


@dataclass(frozen=True)
class Anatomy:
    """What one exposure images: Body Part Examined, View Position (DX defined terms) and Image
    Laterality (R, L, B; None or "" for unpaired parts). Chosen per exposure, never one default."""

    body_part: str
    view_position: str
    laterality: str | None = None


@dataclass(frozen=True)
class CalibrationKey:
    """Calibration sets are kept per detector serial and readout mode."""

    detector_serial: str
    mode: str


@dataclass(frozen=True)
class ExposureIndex:
    """IEC 62494-1 exposure index: EI = 100 x air kerma (uGy); DI = 10 log10(EI / EI_T)."""

    ei: float
    target_ei: float
    deviation_index: float


@dataclass(frozen=True)
class SpooledInstance:
    """An instance made durable: file fsynced and renamed, queue rows committed."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    accession_number: str
    path: str
    sha256: str
    size: int
    destinations: tuple[str, ...] = field(default=())
    xxh3_128: str | None = None  # fast digest checked before each send (None: spooled before it was recorded)
