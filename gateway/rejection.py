"""What the technologist's verdict does to an image's deliveries (IHE: a rejected image is not
clinical at the archive).

Accepted: deliveries held for review are due at once. Rejected: every delivery that has not
left is withheld for good (the image stays in the spool, for reject analysis); where it has
already left, it cannot be recalled, so a Key Object Selection "Rejected for Quality Reasons"
referencing it is spooled for exactly those destinations that take notes (a destination's
`send_rejection_kos`, else `[review] send_rejection_kos`). Re-rejecting an image makes no
second note.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import pydicom

from gateway.config import Config
from gateway.dicom import new_uid, to_bytes
from gateway.dicom.kos import build_rejection_kos
from gateway.spool import Spool

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerdictOutcome:
    released: tuple[str, ...] = ()  # destinations now due (accepted)
    withheld: tuple[str, ...] = ()  # destinations that will never get it (rejected)
    left: tuple[str, ...] = ()  # destinations it had already left for (rejected)
    kos_uid: str = ""  # the rejection note spooled for those of `left` that take notes ("" none)


def apply_verdict(spool: Spool, config: Config, sop_instance_uid: str, status: str, now: datetime,
                  kos_made: set[str] | None = None) -> VerdictOutcome:
    """Apply 'accepted' or 'rejected' to the instance's deliveries; `kos_made` (image UIDs a note
    was made for) keeps a second rejection of the same image from making a second note."""
    if status == "accepted":
        return VerdictOutcome(released=tuple(spool.release_held(sop_instance_uid, now.timestamp())))
    withheld, left = spool.withhold(sop_instance_uid, "rejected for quality reasons at the console",
                                    now.timestamp())
    kos_uid = ""
    done = kos_made if kos_made is not None else set()
    noted = [d for d in left if takes_rejection_notes(config, d)]
    if noted and sop_instance_uid not in done:
        kos_uid = _spool_note(spool, config, sop_instance_uid, noted, now)
        done.add(sop_instance_uid)
    return VerdictOutcome(withheld=tuple(withheld), left=tuple(left), kos_uid=kos_uid)


def takes_rejection_notes(config: Config, destination: str) -> bool:
    """The destination's own `send_rejection_kos`, else `[review] send_rejection_kos` (also for a
    destination no longer configured)."""
    own = next((d.send_rejection_kos for d in config.destinations if d.name == destination), None)
    return config.review.send_rejection_kos if own is None else own


def _spool_note(spool: Spool, config: Config, sop_instance_uid: str, destinations: list[str], now: datetime) -> str:
    instance = spool.instance(sop_instance_uid)
    if instance is None:
        raise LookupError(f"{sop_instance_uid} is not in the spool")
    image = pydicom.dcmread(instance.path, stop_before_pixels=True)
    root = config.site.uid_root
    kos = build_rejection_kos([image], site=config.site, series_uid=new_uid(root), sop_instance_uid=new_uid(root),
                              now=now)
    spool.put(to_bytes(kos), sop_instance_uid=kos.SOPInstanceUID, sop_class_uid=kos.SOPClassUID,
              study_instance_uid=kos.StudyInstanceUID, accession_number=instance.accession_number,
              destinations=destinations)
    LOGGER.info("rejection note %s for %s queued to %s", kos.SOPInstanceUID, sop_instance_uid,
                ", ".join(destinations))
    return str(kos.SOPInstanceUID)
