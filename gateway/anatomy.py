"""Body parts and views dxgate can code: SNOMED CT codes of CID 4031 (regions) and CID 4010 (views).

In the bottom layer: the configuration, the exam workflow and the DICOM builder check anatomy
the same way.

The DX Anatomy Imaged module needs a coded Anatomic Region and an Image Laterality; the
laterality of a paired part (hand, knee...) cannot be guessed and must be given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.sr.codedict import codes

from gateway.errors import DxgateError

LOGGER = logging.getLogger(__name__)


class AnatomyError(DxgateError):
    """A body part or laterality that dxgate cannot code for the image."""


@dataclass(frozen=True)
class BodyPart:
    term: str  # Body Part Examined (0018,0015) defined term
    code: str  # SNOMED CT concept id (scheme SCT)
    meaning: str
    paired: bool


BODY_PARTS: dict[str, BodyPart] = {
    b.term: b
    for b in (
        BodyPart("CHEST", "816094009", "Chest", False),
        BodyPart("ABDOMEN", "818981001", "Abdomen", False),
        BodyPart("PELVIS", "816092008", "Pelvis", False),
        BodyPart("SKULL", "89546000", "Skull", False),
        BodyPart("CSPINE", "122494005", "Cervical spine", False),
        BodyPart("TSPINE", "122495006", "Thoracic spine", False),
        BodyPart("LSPINE", "122496007", "Lumbar spine", False),
        BodyPart("HAND", "85562004", "Hand", True),
        BodyPart("WRIST", "74670003", "Wrist joint", True),
        BodyPart("ELBOW", "16953009", "Elbow joint", True),
        BodyPart("SHOULDER", "16982005", "Shoulder", True),
        BodyPart("HIP", "24136001", "Hip joint", True),
        BodyPart("KNEE", "72696002", "Knee", True),
        BodyPart("ANKLE", "70258002", "Ankle joint", True),
        BodyPart("FOOT", "56459004", "Foot", True),
    )
}

LATERALITIES = ("R", "L", "B", "U")


@dataclass(frozen=True)
class View:
    code: str
    meaning: str


# View Position (0018,5101): the DX defined terms (PS3.3 C.8.11.5), each with its View Code
# Sequence entry from CID 4010 (pydicom's code dictionary). A decubitus view is a frontal
# projection with the patient lying on the side; oblique views use the right/left oblique codes.
_CID4010 = codes.CID4010
VIEWS: dict[str, View] = {
    term: View(code.value, code.meaning)
    for term, code in (
        ("AP", _CID4010.AnteroPosterior),
        ("PA", _CID4010.PosteroAnterior),
        ("LL", _CID4010.LeftLateral),
        ("RL", _CID4010.RightLateral),
        ("RLD", _CID4010.Frontal),
        ("LLD", _CID4010.Frontal),
        ("RLO", _CID4010.RightOblique),
        ("LLO", _CID4010.LeftOblique),
    )
}


def view(position: str) -> View | None:
    """The coded view for a View Position, None for an empty one; unknown positions are refused."""
    if position == "":
        return None
    try:
        return VIEWS[position.strip().upper()]
    except KeyError:
        raise AnatomyError(f"view position {position!r} is not known to dxgate (known: {', '.join(VIEWS)})") from None


def body_part(term: str) -> BodyPart:
    """Look up a Body Part Examined term (case-insensitive)."""
    try:
        return BODY_PARTS[term.strip().upper()]
    except KeyError:
        raise AnatomyError(
            f"body part {term!r} is not known to dxgate (known: {', '.join(BODY_PARTS)})"
        ) from None


def check_anatomy(body_part_term: str, view_position: str, laterality: str | None) -> None:
    """Raise AnatomyError unless the image could be coded: checked before the tube fires."""
    image_laterality(body_part(body_part_term), laterality)
    view(view_position)


def image_laterality(part: BodyPart, laterality: str | None) -> str:
    """Image Laterality (0020,0062): 'U' for unpaired parts; paired parts need R, L or B."""
    if laterality is None or laterality == "":
        if part.paired:
            raise AnatomyError(f"body part {part.term} is paired: laterality R, L or B must be given")
        return "U"
    lat = laterality.strip().upper()
    if lat not in LATERALITIES:
        raise AnatomyError(f"laterality {laterality!r} is not one of {', '.join(LATERALITIES)}")
    if part.paired and lat == "U":
        raise AnatomyError(f"body part {part.term} is paired: laterality U (unpaired) is wrong for it")
    if not part.paired and lat != "U":
        raise AnatomyError(f"body part {part.term} is unpaired: laterality must be U, not {lat}")
    return lat
