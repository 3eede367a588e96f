"""Anatomy coding lives in the bottom layer (gateway.anatomy); re-exported for the builder."""

from gateway.anatomy import (
    BODY_PARTS,
    LATERALITIES,
    VIEWS,
    AnatomyError,
    BodyPart,
    View,
    body_part,
    check_anatomy,
    image_laterality,
    view,
)

__all__ = ["BODY_PARTS", "LATERALITIES", "VIEWS", "AnatomyError", "BodyPart", "View", "body_part",
           "check_anatomy", "image_laterality", "view"]
