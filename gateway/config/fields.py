"""Field types and validators the configuration sections share, and the sections' common base."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr

from gateway import anatomy
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
