"""Which destinations an object goes to, decided once, when it is spooled.

A destination's filters (`only_sop_classes`, `only_modalities`, `only_body_parts`) each
admit an object when empty or when the object's value is listed; a destination takes an
object when all three admit it. E.g. For Presentation images to the PACS, For Processing
images to a research archive, dose reports to a dose registry:

    [[destinations]]
    name = "pacs"
    only_sop_classes = ["1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.88.67"]
    [[destinations]]
    name = "research"
    only_sop_classes = ["1.2.840.10008.5.1.4.1.1.1.1.1"]
    [[destinations]]
    name = "dose-registry"
    only_sop_classes = ["1.2.840.10008.5.1.4.1.1.88.67"]

The delivery rows are created by `Spool.put(destinations=destinations_for(...))`, so a
restart, a reload or the operator queue never re-decides where an object goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from gateway.config import DestinationConfig
from gateway.errors import ForwardError


class NoDestination(ForwardError):
    """No configured destination takes this object."""


@dataclass(frozen=True)
class ObjectSummary:
    """The attributes routing looks at."""

    sop_class_uid: str
    modality: str = ""
    body_part: str = ""

    @classmethod
    def of(cls, ds: Dataset) -> ObjectSummary:
        return cls(sop_class_uid=str(ds.get("SOPClassUID", "")), modality=str(ds.get("Modality", "") or ""),
                   body_part=str(ds.get("BodyPartExamined", "") or ""))


def admits(destination: DestinationConfig, summary: ObjectSummary) -> bool:
    """Whether a destination's filters take the object."""
    return all(not allowed or value in allowed for allowed, value in (
        (destination.only_sop_classes, summary.sop_class_uid),
        (destination.only_modalities, summary.modality),
        (destination.only_body_parts, summary.body_part)))


def destinations_for(config_destinations: Sequence[DestinationConfig], dataset_summary: ObjectSummary) -> list[str]:
    """The names of the destinations that take the object, in configuration order; raises
    NoDestination when none does (nothing would ever forward it)."""
    names = [d.name for d in config_destinations if admits(d, dataset_summary)]
    if not names:
        s = dataset_summary
        raise NoDestination(f"no destination takes this object (SOP class {s.sop_class_uid}, modality "
                            f"{s.modality or '-'}, body part {s.body_part or '-'}); check the destinations' "
                            "only_sop_classes, only_modalities and only_body_parts")
    return names


def check_routable(config_destinations: Sequence[DestinationConfig], dataset_summary: ObjectSummary) -> None:
    """Before the tube fires: NoDestination unless the image about to be made has a
    destination (its SOP class, modality and body part are known at arming)."""
    destinations_for(config_destinations, dataset_summary)
