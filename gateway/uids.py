"""DICOM UIDs: their syntax, and generation under the site's UID root (PS3.5 9 and B.2).

In the shared bottom layer: the worklist parser, the DICOM builder, the spool and the
embedded PACS all check UIDs the same way."""

from __future__ import annotations

import logging
import re
import uuid

from gateway.errors import ConfigError

LOGGER = logging.getLogger(__name__)

UUID_ROOT = "2.25"
MAX_UID_LENGTH = 64
# Fewer suffix digits than this would make collisions between gateways plausible.
MIN_SUFFIX_DIGITS = 20

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(uid: str) -> bool:
    """Whether `uid` is a syntactically valid DICOM UID (digits and dots, no leading zeros, <= 64)."""
    return len(uid) <= MAX_UID_LENGTH and bool(_UID_RE.match(uid))


def new_uid(root: str) -> str:
    """A new globally unique UID under `root`.

    Root "2.25" gives the UUID-derived form of PS3.5 B.2 (2.25.<UUID as decimal integer>).
    Any other root gets a random decimal suffix as long as fits in 64 characters; a root that
    leaves room for fewer than MIN_SUFFIX_DIGITS digits is refused.
    """
    if root == UUID_ROOT:
        uid = f"{UUID_ROOT}.{uuid.uuid4().int}"
    else:
        if not _UID_RE.match(root):
            raise ConfigError(f"UID root {root!r} is not a valid UID prefix (digits and dots, no leading zeros)")
        room = MAX_UID_LENGTH - len(root) - 1
        if room < MIN_SUFFIX_DIGITS:
            raise ConfigError(
                f"UID root {root!r} is {len(root)} characters long: it leaves {room} digits for the "
                f"unique suffix, at least {MIN_SUFFIX_DIGITS} are needed"
            )
        # 128 random bits give 39 decimal digits; a leading zero would be invalid.
        digits = str(uuid.uuid4().int).lstrip("0")
        while len(digits) < room:
            digits += str(uuid.uuid4().int)
        uid = f"{root}.{digits[:room]}"
    if not is_valid_uid(uid):  # a bug here must never reach an archive
        raise AssertionError(f"generated invalid UID {uid!r}")
    return uid
