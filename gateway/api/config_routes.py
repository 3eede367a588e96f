"""The configuration file from the console: engineers read it (secrets redacted), admins change it.

A change is checked with the loader `dxgate check-config` uses, written atomically (the old
file kept as `<name>.previous`, the mode unchanged) and reloaded by the daemon as SIGHUP
would; the answer says which changed sections took effect and which wait for a restart. A
redacted value sent back unchanged keeps the stored secret: the placeholder is never written.
"""

from __future__ import annotations

import os
import tempfile
import threading
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from gateway import config as config_module
from gateway.api.console_routes import REDACTED, redact
from gateway.api.context import ApiContext, Require
from gateway.config import RELOADABLE_SECTIONS, Config, ConfigError
from gateway.users import User


class ConfigEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=1_000_000, description="The whole configuration file, TOML.")


def redacted_text(path: Path) -> str:
    """The file as TOML with every secret shown as REDACTED (its comments are not kept)."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return tomli_w.dumps(redact(raw))


def keep_secrets(new: Any, old: Any, where: str = "") -> Any:
    """`new` with each REDACTED value replaced by the stored one at the same place (a table in a
    list is matched by its `name`, else by position); ConfigError when nothing secret is stored there."""
    if isinstance(new, dict):
        table = old if isinstance(old, dict) else {}
        return {k: keep_secrets(v, table.get(k), f"{where}.{k}".lstrip(".")) for k, v in new.items()}
    if isinstance(new, list):
        olds: list[Any] = old if isinstance(old, list) else []
        named = {o.get("name"): o for o in olds if isinstance(o, dict) and "name" in o}
        out = []
        for i, v in enumerate(new):
            match = named.get(v.get("name")) if isinstance(v, dict) and "name" in v else \
                (olds[i] if i < len(olds) else None)
            out.append(keep_secrets(v, match, f"{where}[{i}]"))
        return out
    if new == REDACTED:
        if old is None or old == REDACTED or redact(old, where.rsplit(".", 1)[-1]) != REDACTED:
            raise ConfigError(f"{where}: {REDACTED!r} stands for a stored secret, but none is stored here: "
                              "type the value")
        return old
    return new


def checked(text: str, path: Path) -> tuple[str, Config]:
    """The TOML to write for an admin's edit and the configuration it makes, validated as
    `dxgate check-config` does; ConfigError (the loader's message) when it is not acceptable."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    stored = tomllib.loads(path.read_text(encoding="utf-8"))
    raw = keep_secrets(raw, stored)
    cfg = config_module.from_dict(raw, source=str(path))
    config_module.check_state_dir(cfg)
    return tomli_w.dumps(raw), cfg


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` by `text` (temp file, fsync, rename), the old file kept as `<name>.previous`,
    both with the old file's mode."""
    mode = path.stat().st_mode & 0o7777
    old = path.read_bytes()
    for target, data in ((path.with_name(path.name + ".previous"), old), (path, text.encode("utf-8"))):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def changed_sections(old: Config, new: Config) -> list[str]:
    return [name for name in type(new).model_fields if getattr(new, name) != getattr(old, name)]


def build_config_router(ctx: ApiContext, require: Require) -> APIRouter:
    r = APIRouter()
    engineer, admin = require("engineer"), require("admin")
    saving = threading.Lock()

    def file_path() -> Path:
        if ctx.config_path is None:
            raise HTTPException(404, detail="this API has no configuration file to show")
        return ctx.config_path

    @r.get("/api/console/config/file")
    def config_file(user: User = Depends(engineer)) -> dict[str, Any]:  # noqa: B008
        """The configuration file as TOML, secrets redacted; `editable` for admins."""
        path = file_path()
        try:
            text = redacted_text(path)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise HTTPException(409, detail=f"{path}: cannot be shown: {exc}") from None
        return {"path": str(path), "text": text,
                "editable": user.role == "admin" and ctx.reload_config is not None}

    @r.post("/api/console/config/file")
    def config_save(body: ConfigEdit, user: User = Depends(admin)) -> dict[str, Any]:  # noqa: B008
        """Check, write and reload an admin's edit of the configuration file (422: nothing written)."""
        path = file_path()
        if ctx.reload_config is None:
            raise HTTPException(404, detail="the configuration cannot be changed through this API")
        with saving:
            try:
                old = config_module.load(path)
                text, new = checked(body.text, path)
            except ConfigError as exc:
                if ctx.on_config_change is not None:
                    ctx.on_config_change(user.name, False, f"configuration change refused: {exc}")
                raise HTTPException(422, detail=str(exc)) from None
            changed = changed_sections(old, new)
            write_atomically(path, text)
            outcome = ctx.reload_config()
            applied = [] if outcome.startswith("refused") else [s for s in changed if s in RELOADABLE_SECTIONS]
            restart = [s for s in changed if s not in applied]
            if ctx.on_config_change is not None:
                ctx.on_config_change(user.name, True, "configuration changed: " + (", ".join(changed) or "nothing")
                                     + (f"; needs a restart: {', '.join(restart)}" if restart else ""))
        return {"changed": changed, "applied": applied, "needs_restart": restart, "reload": outcome,
                "previous": path.name + ".previous"}

    return r
