"""Writing a Config as TOML, each key preceded by its description and bounds."""

from __future__ import annotations

import typing
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel

from gateway.config.root import Config


def to_toml(cfg: Config) -> str:
    """Render a config as TOML (tomli-w), each key preceded by its description and bounds."""
    out: list[str] = []
    _emit(cfg, "", out)
    return "\n".join(out).lstrip() + "\n"


def _emit(obj: BaseModel, prefix: str, out: list[str]) -> None:
    tables: list[tuple[str, Any]] = []
    fields = type(obj).model_fields
    for name, info in fields.items():
        value = getattr(obj, name)
        if isinstance(value, BaseModel) or (isinstance(value, tuple) and value and isinstance(value[0], BaseModel)):
            tables.append((name, value))
            continue
        out.append(f"# {info.description or ''}{_bounds(info)}")
        out.append(f"{name} = {_inline(value)}" if value is not None else f"# {name} = (unset)")  # TOML has no null
    for name, value in tables:
        full = f"{prefix}{name}"
        if isinstance(value, tuple):
            for item in value:
                out.append(f"\n[[{full}]]")
                _emit(item, f"{full}.", out)
        else:
            out.append(f"\n# {fields[name].description or ''}\n[{full}]")
            _emit(value, f"{full}.", out)


def _inline(value: Any) -> str:
    """One TOML value on one line (tomli-w would turn a dict into a table of its own)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{tomli_w.dumps({k: 0}).split(' =')[0]} = {_inline(v)}"
                                for k, v in value.items()) + " }" if value else "{}"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _bounds(info: Any) -> str:
    lo = hi = None
    for m in info.metadata:
        lo = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else lo
        hi = getattr(m, "le", None) if getattr(m, "le", None) is not None else hi
    choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is Literal else None
    if choices:
        return " One of: " + ", ".join(repr(c) for c in choices) + "."
    if lo is not None or hi is not None:
        return f" Range: {'' if lo is None else lo}..{'' if hi is None else hi}."
    return ""
