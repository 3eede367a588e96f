"""Sections for the exam workflow: exposure defaults, protocols, presentation, MPPS, dose report, review."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictBool, StrictStr, model_validator

from gateway import anatomy
from gateway.config.fields import AETitle, Host, Number, PortNumber, Text64, _body_part_term, _Section

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
