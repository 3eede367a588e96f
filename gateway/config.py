"""Typed configuration (pydantic v2): every key with its type, default, bounds and description.

The file is TOML. Unknown keys, wrong types, NaN or infinite numbers, values out of range and
combinations the gateway would refuse later (an AE title pynetdicom cannot send, a paired body
part without laterality, two destinations of one name, a UID root with no room for a unique
suffix) are refused when the file is read, with an error naming the key: a configuration that
`check-config` accepts is one the gateway runs with.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from gateway import anatomy
from gateway.errors import ConfigError
from gateway.uids import MAX_UID_LENGTH, MIN_SUFFIX_DIGITS, UUID_ROOT, is_valid_uid

AE_MAX = 16


def _ae_title(value: str) -> str:
    """An AE title pynetdicom and every peer accept (PS3.5 AE VR)."""
    if not value.strip():
        raise ValueError("an AE title cannot be empty")
    if len(value) > AE_MAX:
        raise ValueError(f"AE title {value!r} is {len(value)} characters; at most {AE_MAX}")
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or not value.isascii():
        raise ValueError(f"AE title {value!r} holds a backslash, a control or a non-ASCII character")
    return value


def _uid_root(value: str) -> str:
    if value != UUID_ROOT:
        if not is_valid_uid(value):
            raise ValueError(f"UID root {value!r} is not a valid UID prefix (digits and dots, no leading zeros)")
        room = MAX_UID_LENGTH - len(value) - 1
        if room < MIN_SUFFIX_DIGITS:
            raise ValueError(f"UID root {value!r} leaves {room} digits for the unique suffix; "
                             f"at least {MIN_SUFFIX_DIGITS} are needed")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _no_controls(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{value!r} holds a control character")
    return value


def _host(value: str) -> str:
    """A host name or address: not empty, no blank or control character inside."""
    if not value.strip():
        raise ValueError("must not be empty")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"host {value!r} holds a blank or a control character")
    return value


_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _registered_name(value: str) -> str:
    """A driver or backend is named, never given as a dotted path to import ('os:system')."""
    if not _NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a registered name (letters, digits, '_', '-', '.'; "
                         "never a module path such as 'package.module:function')")
    return value


def _optional_host(value: str) -> str:
    return value if value == "" else _host(value)


def _optional_name(value: str) -> str:
    return value if value == "" else _registered_name(value)


def _finite_tree(value: Any, where: str = "") -> Any:
    """NaN and infinities are refused at any depth of a free-form table (backend options)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number{f' (at {where})' if where else ''}")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_tree(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_tree(v, f"{where}[{i}]")
    return value


def _plain_text(value: str) -> str:
    """Text written into DICOM objects (LO/SH): no control characters, no backslash."""
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{value!r} holds a backslash or a control character")
    return value


def _number(value: Any) -> Any:
    """A TOML number (an integer is fine where a float is meant); never a string or a boolean."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
    return value


def _body_part_term(value: str) -> str:
    """The defined term as written into Body Part Examined (upper case), like view_position."""
    if value not in anatomy.BODY_PARTS:
        try:
            anatomy.body_part(value)
        except anatomy.AnatomyError as exc:
            raise ValueError(str(exc)) from None
        raise ValueError(f"body part {value!r}: write the defined term {value.strip().upper()!r}")
    return value


Number = Annotated[float, BeforeValidator(_number)]
AETitle = Annotated[StrictStr, AfterValidator(_ae_title)]
Host = Annotated[StrictStr, AfterValidator(_host)]
# a file or directory of the gateway's own state (relative: under state_dir)
StatePath = Annotated[StrictStr, AfterValidator(_not_blank), AfterValidator(_no_controls)]
# a file the operator supplies; empty: not used
OptionalPath = Annotated[StrictStr, AfterValidator(_no_controls)]
RegisteredName = Annotated[StrictStr, AfterValidator(_registered_name)]
Text64 = Annotated[StrictStr, Field(max_length=64), AfterValidator(_plain_text)]
Text16 = Annotated[StrictStr, Field(max_length=16), AfterValidator(_plain_text)]
PortNumber = Annotated[StrictInt, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)


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


_CS_RE = re.compile(r"^[A-Z0-9_ ]*$")


def _code_string(value: str) -> str:
    """A DICOM code string (CS) such as a modality: upper-case letters, digits, '_' and space."""
    if not _CS_RE.match(value):
        raise ValueError(f"{value!r} is not a DICOM code string (upper-case letters, digits, '_' and space)")
    return value


Modality = Annotated[StrictStr, Field(max_length=16), AfterValidator(_code_string)]
DateRange = Literal["today", "none"]


class WorklistConfig(_Section):
    host: Host = Field("127.0.0.1", description="Worklist (RIS) server host.")
    port: PortNumber = Field(104, description="Worklist server port.")
    called_ae: AETitle = Field("RIS", description="Worklist server AE title.")
    match_station_ae: StrictBool = Field(
        False, description="Send site.ae_title as the Scheduled Station AE Title matching key. Off by default: many "
                           "RIS leave that attribute empty in their entries, and an empty value never matches a "
                           "non-empty key, so the worklist would come back empty. Turn it on when the RIS fills it "
                           "and shares the worklist between rooms.")
    modality: Modality = Field("DX", description="Modality matching key (a DICOM code string); empty: any modality.")
    station_name: Annotated[StrictStr, Field(max_length=16), AfterValidator(_plain_text)] = Field(
        "", description="Scheduled Station Name matching key (* and ? wildcards); empty: not matched.")
    date_range: DateRange = Field(
        "today", description="Scheduled Procedure Step Start Date matching key: 'today' asks for today - "
                             "days_before .. today + days_ahead; 'none' sends no date (max_answers and "
                             "max_query_s still bound the query).")
    days_before: StrictInt = Field(0, ge=0, le=30, description="Also fetch steps scheduled up to this many days "
                                                               "before today (date_range 'today').")
    days_ahead: StrictInt = Field(0, ge=0, le=30, description="Also fetch steps scheduled up to this many days "
                                                              "ahead (date_range 'today').")
    timeout_s: Number = Field(10.0, ge=0.5, le=300, description="Network timeout for the query.")
    max_query_s: Number = Field(30.0, ge=1, le=600, description="Longest a whole worklist query may take, answers "
                                                               "included.")
    max_answers: StrictInt = Field(2000, ge=1, le=100_000,
                                   description="Most answers one worklist query may return; more end the query.")
    refresh_s: Number = Field(300.0, ge=10, le=86400, description="How often the daemon asks the RIS for the day's "
                                                                 "worklist.")
    cache: StatePath = Field("worklist-cache.json", description="Last worklist answer, used while the RIS is "
                                                                "unreachable (relative: under state_dir).")

    @model_validator(mode="after")
    def _dates(self) -> WorklistConfig:
        if self.date_range == "none" and (self.days_before or self.days_ahead):
            raise ValueError("days_before and days_ahead apply to date_range 'today'; with 'none' no date is asked")
        return self


def _sop_class(value: str) -> str:
    if not is_valid_uid(value):
        raise ValueError(f"{value!r} is not a SOP Class UID (digits and dots)")
    return value


class DestinationConfig(_Section):
    name: Annotated[StrictStr, Field(max_length=64), AfterValidator(_not_blank), AfterValidator(_plain_text)] = Field(
        "pacs", description="Destination name, used in the queue and in logs.")
    host: Host = Field("127.0.0.1", description="Archive host.")
    port: PortNumber = Field(104, description="Archive port.")
    called_ae: AETitle = Field("PACS", description="Archive AE title.")
    max_pdu: StrictInt = Field(131072, ge=4096, le=4_194_304, description="Maximum PDU length offered.")
    timeout_s: Number = Field(30.0, ge=1, le=600, description="Network timeout for DIMSE and association.")
    associations: StrictInt = Field(1, ge=1, le=8, description="Associations a forwarding pass opens to this archive "
                                    "at once, each sending its share of the backlog (every image still sent once).")
    for_processing: StrictBool = Field(False, description="Send this archive the DX For Processing image too (the "
                                       "linear frame, its own SOP Instance UID, the same acquisition).")
    commitment: StrictBool = Field(False, description="Ask this archive for Storage Commitment (Push Model) after "
                                   "each batch; a spooled file is deleted only once it committed it. Needs "
                                   "[commitment_listener] reachable from the archive.")
    commitment_timeout_s: Number = Field(600.0, ge=1, le=7 * 86400, description="No commitment report this long after "
                                         "a request: ask again.")
    commitment_asks: StrictInt = Field(3, ge=1, le=100, description="Commitment requests per transaction; when the "
                                       "last goes unanswered an alarm is raised (the files are kept).")
    commitment_hold_s: Number = Field(2.0, ge=0, le=60, description="How long the association stays open after a "
                                      "commitment request for a report on it (0: report on a new association only).")
    retention_s: Number = Field(7 * 86400.0, ge=0, le=3650 * 86400, description="Without commitment: a spooled file "
                                "is deleted this long after this archive stored it (and every other destination is "
                                "done with it). Never to make room.")
    tls: StrictBool = Field(False, description="DICOM TLS (TLS 1.2 or later) to this archive; its certificate is "
                            "verified against tls_ca_file and its host name or address.")
    tls_ca_file: OptionalPath = Field("", description="CA bundle (PEM) that signs the archive's certificate; a path, "
                                      "or credential:NAME for a systemd credential.")
    tls_cert_file: OptionalPath = Field("", description="dxgate's client certificate (PEM) for mutual TLS; empty: "
                                        "none. A path or credential:NAME.")
    tls_key_file: OptionalPath = Field("", description="The private key (PEM) of tls_cert_file. A path or "
                                       "credential:NAME.")
    transfer_syntax: Literal["explicit", "jpeg-ls-lossless", "jpeg2000-lossless", "rle"] = Field(
        "explicit", description="Send images losslessly compressed in this syntax when the archive accepts it "
                                "(else Explicit VR Little Endian); the spool keeps the original.")
    only_sop_classes: tuple[Annotated[StrictStr, AfterValidator(_sop_class)], ...] = Field(
        (), description="Route only objects of these SOP Class UIDs here (empty: any).")
    only_modalities: tuple[Modality, ...] = Field((), description="Route only objects of these modalities here "
                                                                  "(empty: any).")
    only_body_parts: tuple[Annotated[StrictStr, AfterValidator(_body_part_term)], ...] = Field(
        (), description="Route only objects of these Body Part Examined terms here (empty: any).")
    review_hold: StrictBool = Field(True, description="Images wait here for the technologist's verdict ([review] "
                                    "hold_s); false: this destination receives at once (e.g. a research archive), "
                                    "and a later rejection reaches it only as a rejection note.")
    send_rejection_kos: StrictBool | None = Field(None, description="Send this destination a rejection note (KOS "
                                                  "'Rejected for Quality Reasons') for a rejected image that already "
                                                  "left for it; unset: [review] send_rejection_kos.")

    @model_validator(mode="after")
    def _tls_files(self) -> DestinationConfig:
        if self.tls and not self.tls_ca_file:
            raise ValueError("tls = true needs tls_ca_file (the CA that signs the archive's certificate)")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_cert_file and not self.tls:
            raise ValueError("tls_cert_file is set but tls = false")
        return self


def _optional_ae(value: str) -> str:
    return value if value == "" else _ae_title(value)


class CommitmentListenerConfig(_Section):
    ae_title: Annotated[StrictStr, AfterValidator(_optional_ae)] = Field(
        "", description="AE title the archives call to report storage commitment (empty: site.ae_title).")
    host: Host = Field("127.0.0.1", description="Address the storage commitment listener binds to; it runs when a "
                                                "destination has commitment = true.")
    port: PortNumber = Field(11112, description="Port of the storage commitment listener.")
    allowed_calling_aes: tuple[AETitle, ...] = Field(
        (), description="Calling AE titles admitted (empty: the called AE titles of the destinations with commitment).")
    allowed_hosts: tuple[Host, ...] = Field(
        (), description="Peer hosts or addresses admitted (empty: the hosts of the destinations with commitment).")
    timeout_s: Number = Field(30.0, ge=1, le=600, description="Network timeout of the listener's associations.")
    tls: StrictBool = Field(False, description="DICOM TLS (TLS 1.2 or later) on the listener, with tls_cert_file "
                            "and tls_key_file as its server certificate.")
    tls_cert_file: OptionalPath = Field("", description="The listener's certificate (PEM). A path or credential:NAME.")
    tls_key_file: OptionalPath = Field("", description="The listener's private key (PEM). A path or credential:NAME.")
    tls_ca_file: OptionalPath = Field("", description="CA bundle (PEM) that signs the archives' client certificates; "
                                      "a client certificate that is presented is verified against it.")
    tls_require_client_cert: StrictBool = Field(False, description="Refuse archives that present no client "
                                                "certificate signed by tls_ca_file (mutual TLS).")

    @model_validator(mode="after")
    def _tls_files(self) -> CommitmentListenerConfig:
        if self.tls and not (self.tls_cert_file and self.tls_key_file):
            raise ValueError("tls = true needs tls_cert_file and tls_key_file")
        if self.tls_require_client_cert and not (self.tls and self.tls_ca_file):
            raise ValueError("tls_require_client_cert needs tls = true and tls_ca_file")
        return self


ViewPosition = Literal["AP", "PA", "LL", "RL", "RLD", "LLD", "RLO", "LLO", ""]
Laterality = Literal["", "R", "L", "B", "U"]


class ExposureConfig(_Section):
    kvp: Number = Field(80.0, ge=40, le=150, description="Default tube voltage.")
    mas: Number = Field(2.0, ge=0.1, le=500, description="Default tube current-time product.")
    target_ei: Number = Field(400.0, ge=1, le=100000, description="Target exposure index (IEC 62494-1).")
    body_part: Annotated[StrictStr, AfterValidator(_body_part_term)] = Field(
        "CHEST", description="Body Part Examined for exposures with no view chosen.",
        json_schema_extra={"choices": list(anatomy.BODY_PARTS)})
    view_position: ViewPosition = Field("PA", description="View Position (DX defined terms).")
    laterality: Laterality = Field("", description="Image Laterality for paired body parts (R, L, B); empty for "
                                                   "unpaired ones.")

    @model_validator(mode="after")
    def _codable(self) -> ExposureConfig:
        try:
            anatomy.check_anatomy(self.body_part, self.view_position, self.laterality or None)
        except anatomy.AnatomyError as exc:
            raise ValueError(str(exc)) from None
        return self


def _code_key(value: str) -> str:
    scheme, sep, code = value.partition(":")
    if not sep or not scheme.strip() or not code.strip() or any(ord(c) < 32 for c in value):
        raise ValueError(f"code {value!r}: write SCHEME:VALUE, e.g. LN:36554-4 or 99MYRIS:THX2")
    return f"{scheme.strip()}:{code.strip()}"


class ProtocolConfig(_Section):
    """A view the room takes, with its technique and target EI, and the worklist codes that ask for it."""

    name: Text64 = Field(description="What the console shows, e.g. 'Chest PA'.")
    body_part: Annotated[StrictStr, AfterValidator(_body_part_term)] = Field(
        description="Body Part Examined (defined term).", json_schema_extra={"choices": list(anatomy.BODY_PARTS)})
    view_position: ViewPosition = Field(description="View Position (DX defined terms).")
    laterality: Laterality = Field("", description="Image Laterality; empty for a paired part: the technologist "
                                                   "chooses R or L at the console.")
    kvp: Number = Field(ge=40, le=150, description="Tube voltage.")
    mas: Number = Field(ge=0.1, le=500, description="Tube current-time product.")
    target_ei: Number = Field(400.0, ge=1, le=100000, description="Target exposure index (IEC 62494-1).")
    codes: tuple[Annotated[StrictStr, AfterValidator(_code_key)], ...] = Field(
        (), description="Worklist codes that select this protocol (Scheduled Protocol Code or Requested Procedure "
                        "Code), as SCHEME:VALUE.")

    @model_validator(mode="after")
    def _codable(self) -> ProtocolConfig:
        try:
            part = anatomy.body_part(self.body_part)
            if self.laterality or not part.paired:
                anatomy.check_anatomy(self.body_part, self.view_position, self.laterality or None)
            else:
                anatomy.view(self.view_position)
        except anatomy.AnatomyError as exc:
            raise ValueError(str(exc)) from None
        return self


def _protocol(name: str, part: str, view: str, kvp: float, mas: float, target: float) -> ProtocolConfig:
    return ProtocolConfig(name=name, body_part=part, view_position=view, kvp=kvp, mas=mas, target_ei=target)


# A starting table (adult techniques of a typical wall stand / table room); a site tunes them.
DEFAULT_PROTOCOLS = (
    _protocol("Chest PA", "CHEST", "PA", 110, 2.0, 300), _protocol("Chest lateral", "CHEST", "LL", 120, 4.0, 300),
    _protocol("Chest AP", "CHEST", "AP", 90, 2.5, 300), _protocol("Abdomen AP", "ABDOMEN", "AP", 80, 20.0, 400),
    _protocol("Pelvis AP", "PELVIS", "AP", 80, 16.0, 400), _protocol("Skull PA", "SKULL", "PA", 75, 16.0, 400),
    _protocol("C-spine lateral", "CSPINE", "LL", 70, 10.0, 400), _protocol("L-spine AP", "LSPINE", "AP", 80, 25.0, 400),
    _protocol("Hand PA", "HAND", "PA", 55, 2.0, 500), _protocol("Wrist PA", "WRIST", "PA", 55, 2.5, 500),
    _protocol("Knee AP", "KNEE", "AP", 65, 5.0, 400), _protocol("Ankle AP", "ANKLE", "AP", 60, 4.0, 400),
    _protocol("Foot AP", "FOOT", "AP", 55, 3.0, 500), _protocol("Shoulder AP", "SHOULDER", "AP", 70, 10.0, 400),
)


class SpoolConfig(_Section):
    directory: StatePath = Field("spool", description="Where DICOM files wait to be forwarded (relative: under "
                                                      "state_dir).")
    database: StatePath = Field("state.db", description="SQLite state database (relative: under state_dir).")
    min_free_mb: StrictInt = Field(512, ge=0, le=1_000_000, description="Refuse acquisition when a state file "
                                                                        "system would fall below this much free space.")
    min_free_inodes: StrictInt = Field(1000, ge=0, le=1_000_000_000, description="Refuse acquisition when a state "
                                       "file system would fall below this many free inodes.")
    raw_directory: StatePath = Field("raw", description="Where raw frames are kept from the moment X-rays may have "
                                                        "been delivered until their image is spooled (relative: "
                                                        "under state_dir).")
    keep_raw_after_image: StrictBool = Field(False, description="Keep each raw frame after its image is spooled (for "
                                             "reprocessing with another calibration); false deletes it once saved.")
    db_busy_timeout_s: Number = Field(5.0, ge=0.1, le=600, description="Longest wait for another process's lock on "
                                                                      "the state database.")


class ApiConfig(_Section):
    host: Host = Field("127.0.0.1", description="Address the local API and console listen on (TLS needed beyond "
                                                "loopback).")
    port: StrictInt = Field(8080, ge=0, le=65535, description="API port (0: any free port).")
    tls_cert: OptionalPath = Field("", description="PEM certificate for HTTPS (required when host is not loopback).")
    tls_key: OptionalPath = Field("", description="PEM private key for HTTPS.")
    session_idle_s: Number = Field(900.0, ge=60, le=86400, description="A console session ends after this long idle.")
    session_max_s: Number = Field(43200.0, ge=300, le=7 * 86400, description="A console session ends after this long.")
    lockout_attempts: StrictInt = Field(5, ge=1, le=100, description="Wrong passwords in a row that lock a user.")
    lockout_s: Number = Field(900.0, ge=1, le=86400, description="How long a locked user stays locked.")
    min_password_length: StrictInt = Field(10, ge=8, le=256, description="Shortest password accepted.")
    socket: OptionalPath = Field("api.sock", description="Unix socket for the operator commands (`dxgate status`, "
                                 "`dxgate queue`), relative to state_dir; empty: none. Whoever can open it acts "
                                 "with socket_role, so it is owner-only unless socket_group is set.")
    socket_role: Literal["technologist", "engineer", "admin"] = Field(
        "admin", description="The role of a command arriving through the Unix socket.")
    socket_group: StrictStr = Field("", max_length=32, description="Group allowed to use the socket (mode 0660); "
                                    "empty: only the daemon's own user (and root). Put the socket in a directory "
                                    "the group can reach, e.g. /run/dxgate/api.sock with RuntimeDirectory.")

    @model_validator(mode="after")
    def _tls_beyond_loopback(self) -> ApiConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.host not in ("127.0.0.1", "::1", "localhost") and not self.tls_cert:
            raise ValueError(f"the API listens on {self.host}, beyond loopback: configure tls_cert and tls_key")
        return self


class PresentationConfig(_Section):
    """Presentation processing of the For Presentation image (gateway.presentation); the For
    Processing image and the exposure index always stay linear."""

    enabled: StrictBool = Field(True, description="Process the For Presentation image (log, equalisation, edges); "
                                                  "false: the linear frame shown through a window.")
    equalize: Number = Field(0.6, ge=0, le=1, description="Share of the coarse-scale signal removed (dynamic range).")
    equalize_mm: Number = Field(20.0, gt=0, le=200, description="Scale of the equalisation (mm).")
    contrast: Number = Field(0.5, ge=0, le=5, description="Middle-scale contrast added.")
    contrast_mm: Number = Field(4.0, gt=0, le=100, description="Scale of the contrast step (mm).")
    edge_amount: Number = Field(0.8, ge=0, le=5, description="Edge enhancement gain.")
    edge_sigma_mm: Number = Field(1.0, gt=0, le=20, description="Scale of the edge step (mm).")
    noise_coring: Number = Field(1.0, ge=0, le=10, description="Detail below this many noise SDs is not sharpened.")
    clahe_clip: Number = Field(0.0, ge=0, le=40, description="CLAHE clip limit as well (0: off; costs ~70 ms at "
                                                              "3072x3072).")


class MppsConfig(_Section):
    enabled: StrictBool = Field(False, description="Report each procedure step to the RIS (MPPS N-CREATE at the "
                                                   "first exposure, N-SET when the exam is closed).")
    host: Host = Field("127.0.0.1", description="MPPS SCP host (often the worklist server).")
    port: PortNumber = Field(104, description="MPPS SCP port.")
    called_ae: AETitle = Field("RIS", description="MPPS SCP AE title.")
    timeout_s: Number = Field(10.0, ge=0.5, le=300, description="Network and DIMSE timeout.")


class DoseReportConfig(_Section):
    enabled: StrictBool = Field(True, description="Write one X-Ray Radiation Dose SR per exam with exposures, when "
                                                  "it is closed, forwarded like an image (route it with "
                                                  "only_sop_classes).")


class ReviewConfig(_Section):
    hold_s: Number = Field(600.0, ge=0, le=3600, description="Hold each new image from the destinations (those "
                           "with review_hold) until the technologist's verdict: accepting sends it at once, "
                           "rejecting withholds it for good, closing the exam sends what was not judged. This is "
                           "the longest wait: an image not judged within it goes as accepted (600 s: longer than an "
                           "exam at the console takes; the images of an exam left open still reach the PACS ten "
                           "minutes later). 0: send at once (a later rejection can then only be "
                           "announced with a rejection note).")
    send_rejection_kos: StrictBool = Field(False, description="When an image rejected at the console has already "
                                           "left for a destination, queue a Key Object Selection 'Rejected for "
                                           "Quality Reasons' (IHE) referencing it to that destination (a "
                                           "destination's own send_rejection_kos overrides this).")
    keep_rejected_days: Number = Field(90.0, ge=0, le=3650, description="A rejected image's spool file is deleted "
                                       "this many days after the rejection, once none of its deliveries can still "
                                       "leave (never to make room); its reject-analysis record stays. 0: keep "
                                       "rejected images forever.")


class AuditConfig(_Section):
    collector_host: Annotated[StrictStr, AfterValidator(_optional_host)] = Field(
        "", description="Syslog collector (ATNA audit record repository); empty: audit records are kept locally only.")
    collector_port: PortNumber = Field(6514, description="Collector port (6514 TLS, 601 TCP, 514 UDP).")
    transport: Literal["tls", "tcp", "udp"] = Field("tls", description="Syslog transport (RFC 5425 TLS, RFC 6587 "
                                                                       "TCP or RFC 5426 UDP).")
    ca_file: OptionalPath = Field("", description="CA bundle to verify the collector (TLS).")
    cert_file: OptionalPath = Field("", description="Client certificate for mutual TLS (optional).")
    key_file: OptionalPath = Field("", description="Client key for mutual TLS (optional).")


class ServiceConfig(_Section):
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level (reloadable).")
    stop_timeout_s: Number = Field(30.0, ge=1, le=300, description="SIGTERM: the longest the daemon takes to stop.")
    heartbeat_s: Number = Field(5.0, ge=0.1, le=300, description="How often each stage reports it is alive.")


RELOADABLE_SECTIONS = ("destinations", "worklist", "service")  # what SIGHUP applies; the rest needs a restart


class Config(_Section):
    state_dir: StatePath = Field("/var/lib/dxgate", description="Root of all local state.")
    site: SiteConfig = Field(default_factory=SiteConfig, description="Who this gateway is.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Flat-panel detector.")
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig, description="X-ray generator.")
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig, description="Calibration.")
    worklist: WorklistConfig = Field(default_factory=WorklistConfig, description="Modality Worklist.")
    exposure: ExposureConfig = Field(default_factory=ExposureConfig, description="Exposure defaults.")
    spool: SpoolConfig = Field(default_factory=SpoolConfig, description="Durable spool.")
    api: ApiConfig = Field(default_factory=ApiConfig, description="Local API and console.")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="Audit trail shipping.")
    mpps: MppsConfig = Field(default_factory=MppsConfig, description="Modality Performed Procedure Step.")
    dose_report: DoseReportConfig = Field(default_factory=DoseReportConfig,
                                          description="X-Ray Radiation Dose SR (IHE REM).")
    review: ReviewConfig = Field(default_factory=ReviewConfig,
                                 description="The technologist's accept/reject and what a rejection does.")
    presentation: PresentationConfig = Field(default_factory=PresentationConfig,
                                             description="Processing of the For Presentation image.")
    service: ServiceConfig = Field(default_factory=ServiceConfig, description="The daemon.")
    commitment_listener: CommitmentListenerConfig = Field(default_factory=CommitmentListenerConfig,
                                                          description="Storage commitment reports from the archives "
                                                                      "(SCP role).")
    destinations: tuple[DestinationConfig, ...] = Field(
        default=(DestinationConfig(),), min_length=1, description="Archives every image is forwarded to.")
    protocols: tuple[ProtocolConfig, ...] = Field(
        default=DEFAULT_PROTOCOLS, description="The views the console offers; worklist codes select them.")

    @model_validator(mode="after")
    def _unique_destinations(self) -> Config:
        for what, names in (("destination", [d.name for d in self.destinations]),
                            ("protocol", [p.name for p in self.protocols])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} names must be unique: {', '.join(dupes)} appear more than once")
        return self

    def path(self, p: str) -> Path:
        """Resolve a configured path relative to state_dir."""
        q = Path(p)
        return q if q.is_absolute() else Path(self.state_dir) / q


# --- reading ----------------------------------------------------------------------------------


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{p}: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text: {exc}") from None
    return from_dict(raw, source=str(p))


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a parsed config; errors read "<source>: <key path>: <problem>"."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # a list that came out short only because its items failed says nothing more
        errors = [e for e in errors if not (e["type"] == "too_short" and any(
            o is not e and tuple(o["loc"][:len(e["loc"])]) == tuple(e["loc"]) for o in errors))]
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in errors)) from None


def _describe(err: Any) -> str:
    # a key is shown as written, unless it holds something that would break the one-line error
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" if str(p).isprintable() else f".{str(p)!r}"
                  for p in err["loc"]).lstrip(".")
    kind, msg = err["type"], err["msg"]
    value = err.get("input")
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind in ("finite_number",) or (isinstance(value, float) and not math.isfinite(value)):
        msg = f"{value!r} is not a finite number"
    elif kind.startswith(("greater_than", "less_than")):
        msg = f"{value!r} is out of range ({msg.lower()})"
    elif kind in ("int_type", "float_type", "string_type", "bool_type", "model_type", "dict_type",
                  "tuple_type", "int_parsing", "float_parsing"):
        msg = f"{_lower_first(msg)}, got {type(value).__name__} {value!r}"
    elif kind == "literal_error":
        msg = f"{value!r}: {_lower_first(msg)}"
    elif kind == "too_short":
        msg = _lower_first(msg)
    elif kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


# --- writing ----------------------------------------------------------------------------------


def to_toml(cfg: Config) -> str:
    """Render a config as TOML (tomli-w), each key preceded by its description and bounds."""
    out: list[str] = []
    _emit(cfg, "", out)
    return "\n".join(out).lstrip() + "\n"


def _emit(obj: BaseModel, prefix: str, out: list[str]) -> None:
    tables: list[tuple[str, Any]] = []
    fields = type(obj).model_fields
    for name, info in fields.items():
        value = getattr(obj, name)
        if isinstance(value, BaseModel) or (isinstance(value, tuple) and value and isinstance(value[0], BaseModel)):
            tables.append((name, value))
            continue
        out.append(f"# {info.description or ''}{_bounds(info)}")
        out.append(f"{name} = {_inline(value)}" if value is not None else f"# {name} = (unset)")  # TOML has no null
    for name, value in tables:
        full = f"{prefix}{name}"
        if isinstance(value, tuple):
            for item in value:
                out.append(f"\n[[{full}]]")
                _emit(item, f"{full}.", out)
        else:
            out.append(f"\n# {fields[name].description or ''}\n[{full}]")
            _emit(value, f"{full}.", out)


def _inline(value: Any) -> str:
    """One TOML value on one line (tomli-w would turn a dict into a table of its own)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{tomli_w.dumps({k: 0}).split(' =')[0]} = {_inline(v)}"
                                for k, v in value.items()) + " }" if value else "{}"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _bounds(info: Any) -> str:
    lo = hi = None
    for m in info.metadata:
        lo = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else lo
        hi = getattr(m, "le", None) if getattr(m, "le", None) is not None else hi
    choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is Literal else None
    if choices:
        return " One of: " + ", ".join(repr(c) for c in choices) + "."
    if lo is not None or hi is not None:
        return f" Range: {'' if lo is None else lo}..{'' if hi is None else hi}."
    return ""


def check_state_dir(cfg: Config) -> None:
    """ConfigError unless state_dir is (or can be made) a directory this process can write in.

    Tried, not inferred from permissions (root passes every permission check, yet not a
    read-only mount)."""
    d = Path(cfg.state_dir)
    probe_dir = d
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ConfigError(f"state_dir: {probe_dir} is not a directory")
    probe = probe_dir / f".dxgate-check-{os.getpid()}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"state_dir: cannot write in {probe_dir}: {exc.strerror or exc}") from None


__all__ = ["ApiConfig", "AuditConfig", "CalibrationConfig", "CommitmentListenerConfig", "Config", "ConfigError",
           "DestinationConfig", "DetectorConfig", "DoseReportConfig", "ExposureConfig", "GeneratorConfig",
           "ServiceConfig", "SiteConfig", "SpoolConfig", "WorklistConfig", "check_state_dir", "from_dict", "load",
           "to_toml"]
