"""The Irradiation Event UID of an exposure (PS3.3 C.7.6.1, PS3.16 TID 10003), derived from the
frame it produced: one pulse, one frame. The dose report's event and every image of that frame
(For Presentation, For Processing, a reprocessed image) thus carry the same UID without passing
it along, and a frame read again from the raw store gets it back.
"""

from __future__ import annotations

import uuid

from pydicom.uid import generate_uid

from gateway.types import FrameMeta
from gateway.uids import UUID_ROOT, is_valid_uid


def irradiation_event_uid(root: str, meta: FrameMeta) -> str:
    """A UID under `root` named by the frame's identity (detector serial, frame number, readout
    time): the same for the same frame, distinct for any other (a name-based hash, PS3.5 B.2
    form under root 2.25)."""
    name = f"dxgate-irradiation:{meta.detector_serial}:{meta.frame_number}:{meta.acquired_at.isoformat()}"
    if root == UUID_ROOT:
        uid = f"{UUID_ROOT}.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"
    else:
        uid = str(generate_uid(prefix=f"{root}.", entropy_srcs=[name]))
    if not is_valid_uid(uid):  # a bug here must never reach an archive
        raise AssertionError(f"derived invalid UID {uid!r}")
    return uid
