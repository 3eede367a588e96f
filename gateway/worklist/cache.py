"""The last good worklist, kept on disk so that a RIS outage does not stop the room.

JSON, written atomically (temporary file fsynced, renamed over the old one, directory
fsynced): a crash leaves either the old cache or the new one, never half of either.
The file holds patient data: it is created mode 0600 inside the gateway's state directory.

Its text is what goes into images while the RIS is down, so it obeys the parser's rule: no
ESC, control character or U+FFFD. An item that breaks it is never saved, and is skipped with a
warning (naming the item and the field, never the value) when an older cache holds one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from gateway.durable import write_atomic
from gateway.errors import WorklistError
from gateway.types import ProtocolCode, WorklistItem
from gateway.worklist.text import UndecodableText, check_text

LOGGER = logging.getLogger(__name__)

FORMAT = "dxgate-worklist-cache"
VERSION = 1


def save_cache(items: Iterable[WorklistItem], path: str | Path, *, saved_at: datetime | None = None) -> None:
    """Replace the cache at `path` with `items`, atomically."""
    p = Path(path)
    items = list(items)
    for n, item in enumerate(items):
        problem = text_problem(item)
        if problem:
            raise WorklistError(f"worklist cache {p} not saved: item {n} {problem}")
    encoded = [encode_item(i) for i in items]
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": (saved_at or datetime.now(UTC)).isoformat(),
        "items": encoded,
    }
    data = json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8")
    write_atomic(p, data)
    LOGGER.info("worklist cache %s: %d item(s) saved", p, len(encoded))


def load_cache(path: str | Path) -> list[WorklistItem]:
    """The cached items; [] when no cache was ever saved. A corrupt cache raises WorklistError."""
    return list(load_cache_with_time(path)[0])


def load_cache_with_time(path: str | Path) -> tuple[list[WorklistItem], datetime | None]:
    """The cached items and when they were saved (None when there is no cache)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        return [], None
    try:
        doc = json.loads(raw.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a dxgate worklist cache")
        if doc.get("version") != VERSION:
            raise ValueError(f"cache version {doc.get('version')!r}, this dxgate reads {VERSION}")
        saved_at = datetime.fromisoformat(doc["saved_at"])
        if not isinstance(doc.get("items"), list):
            raise ValueError("no item list")
    except (ValueError, KeyError, TypeError) as exc:
        raise WorklistError(f"worklist cache {p} is unreadable: {exc}") from None
    items = []
    for n, d in enumerate(doc["items"]):
        try:
            item = decode_item(d)
        except (ValueError, KeyError, TypeError):
            # the parser's message may quote a value (a birth date): name the item, not its data
            raise WorklistError(f"worklist cache {p} is unreadable: item {n} is malformed") from None
        problem = text_problem(item)
        if problem:  # written before dxgate refused such text: never into an image
            LOGGER.warning("worklist cache %s: item %d skipped: it %s", p, n, problem)
            continue
        items.append(item)
    return items, saved_at


def text_problem(item: WorklistItem) -> str:
    """Why the item's text must not reach an ISO_IR 192 object ("" when it may): the field, never
    its value."""
    fields = [(f.name, getattr(item, f.name)) for f in dataclasses.fields(item)]
    for seq in ("protocol_codes", "procedure_codes"):
        fields += [(f"{seq}[{i}].{f.name}", getattr(code, f.name))
                   for i, code in enumerate(getattr(item, seq)) for f in dataclasses.fields(code)]
    for name, value in fields:
        if isinstance(value, str):
            try:
                check_text(value)
            except UndecodableText as exc:
                return f"{exc} in {name}"
    for i, other in enumerate(item.grouped):
        if problem := text_problem(other):
            return f"{problem} of grouped[{i}]"
    return ""


def encode_item(item: WorklistItem) -> dict[str, Any]:
    d = dataclasses.asdict(item)
    d["patient_birth_date"] = item.patient_birth_date.isoformat() if item.patient_birth_date else None
    d["sps_start"] = item.sps_start.isoformat() if item.sps_start else None
    d["protocol_codes"] = [dataclasses.asdict(c) for c in item.protocol_codes]
    d["procedure_codes"] = [dataclasses.asdict(c) for c in item.procedure_codes]
    d["grouped"] = [encode_item(g) for g in item.grouped]
    return d


def decode_item(d: dict[str, Any]) -> WorklistItem:
    if not isinstance(d, dict):
        raise TypeError("cache item is not an object")
    fields = {f.name for f in dataclasses.fields(WorklistItem)}
    unknown = set(d) - fields
    if unknown:
        raise ValueError(f"unknown item key(s) {', '.join(sorted(unknown))}")
    d = dict(d)
    d["patient_birth_date"] = date.fromisoformat(d["patient_birth_date"]) if d.get("patient_birth_date") else None
    d["sps_start"] = datetime.fromisoformat(d["sps_start"]) if d.get("sps_start") else None
    for seq in ("protocol_codes", "procedure_codes"):
        d[seq] = tuple(ProtocolCode(**c) for c in d.get(seq, ()))
    d["grouped"] = tuple(decode_item(g) for g in d.get("grouped", ()))
    for name, value in d.items():
        if name not in ("patient_birth_date", "sps_start", "protocol_codes", "procedure_codes", "grouped") \
                and not isinstance(value, str):
            raise TypeError(f"item key {name} is not a string")
    return WorklistItem(**d)
