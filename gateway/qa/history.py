"""Earlier QA reports of a panel, kept as JSON under <directory>/<serial>/<mode>/, for the trend."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from gateway.durable import makedirs_durable, write_new_file

LOGGER = logging.getLogger(__name__)

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _dir(directory: Path, serial: str, mode: str) -> Path:
    for what, name in (("detector serial", serial), ("mode", mode)):
        if not _SAFE.match(name):
            raise ValueError(f"{what} {name!r} cannot name a directory")
    return directory / serial / mode


def save(directory: Path, doc: dict[str, Any]) -> Path:
    """Keep one report (its to_dict()); never overwrites."""
    where = _dir(directory, doc["detector_serial"], doc["mode"])
    makedirs_durable(where)
    path = where / (doc["made_at"].replace(":", "").replace("+", "p") + ".json")
    write_new_file(path, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n", mode=0o644)
    return path


def earlier(directory: Path, serial: str, mode: str) -> list[dict[str, Any]]:
    """The kept reports of this panel and mode, oldest first; unreadable files are skipped (logged)."""
    where = _dir(directory, serial, mode)
    if not where.is_dir():
        return []
    docs = []
    for path in sorted(where.glob("*.json")):
        try:
            doc = json.loads(path.read_bytes())
            docs.append((str(doc["made_at"]), doc))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            LOGGER.warning("ignoring QA report %s: %s", path, exc)
    return [d for _, d in sorted(docs, key=lambda item: item[0])]


def trend(checks: list[dict[str, Any]], earlier_docs: list[dict[str, Any]]) -> dict[str, list[tuple[str, float]]]:
    """Each check's earlier values, (made_at, value), oldest first."""
    out: dict[str, list[tuple[str, float]]] = {c["name"]: [] for c in checks}
    for doc in earlier_docs:
        for c in doc.get("checks", []):
            if c.get("name") in out:
                out[c["name"]].append((str(doc["made_at"]), float(c["value"])))
    return out


# --- readers for the console: every kept report, one report's page, the trend with limits ---------------

PAGE_SUFFIX = ".html"  # a report's self-contained page, kept beside its JSON under the same name


def report_name(doc: dict[str, Any]) -> str:
    """The file name (without suffix) `save` gives a report."""
    return str(doc["made_at"]).replace(":", "").replace("+", "p")


def kept(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every kept report of every panel and mode under `directory`, as (serial/mode/name, doc),
    newest first; unreadable files and directories that cannot be a panel's are skipped."""
    if not directory.is_dir():
        return []
    found = []
    for serial in sorted(p for p in directory.iterdir() if p.is_dir() and _SAFE.match(p.name)):
        for mode in sorted(p for p in serial.iterdir() if p.is_dir() and _SAFE.match(p.name)):
            for doc in earlier(directory, serial.name, mode.name):
                found.append((f"{serial.name}/{mode.name}/{report_name(doc)}", doc))
    return sorted(found, key=lambda item: str(item[1]["made_at"]), reverse=True)


def page(directory: Path, serial: str, mode: str, name: str) -> Path | None:
    """The kept page of one report, if one was kept; ValueError for a name that cannot be a report's."""
    if not _SAFE.match(name):
        raise ValueError(f"report {name!r} cannot name a file")
    path = _dir(directory, serial, mode) / (name + PAGE_SUFFIX)
    return path if path.is_file() else None


def series(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each check's value over `docs` (oldest first), with the limit and result it had in each report."""
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in sorted(docs, key=lambda d: str(d["made_at"])):
        for c in doc.get("checks", []):
            out.setdefault(str(c["name"]), []).append(
                {"made_at": str(doc["made_at"]), "value": float(c["value"]), "limit": float(c["limit"]),
                 "passed": bool(c["passed"])})
    return out
