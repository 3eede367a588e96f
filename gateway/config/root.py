"""The root Config holding every section, read from a TOML file and validated."""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from gateway.config.fields import StatePath, _Section
from gateway.config.hardware import CalibrationConfig, DetectorConfig, GeneratorConfig, SiteConfig
from gateway.config.network import CommitmentListenerConfig, DestinationConfig, WorklistConfig
from gateway.config.service import ApiConfig, AuditConfig, ServiceConfig, SpoolConfig
from gateway.config.workflow import (
    DEFAULT_PROTOCOLS,
    DoseReportConfig,
    ExposureConfig,
    MppsConfig,
    PresentationConfig,
    ProtocolConfig,
    ReviewConfig,
)
from gateway.errors import ConfigError

RELOADABLE_SECTIONS = ("destinations", "worklist", "service")  # what SIGHUP applies; the rest needs a restart


class Config(_Section):
    state_dir: StatePath = Field("/var/lib/dxgate", description="Root of all local state.")
    site: SiteConfig = Field(default_factory=SiteConfig, description="Who this gateway is.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Flat-panel detector.")
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig, description="X-ray generator.")
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig, description="Calibration.")
    worklist: WorklistConfig = Field(default_factory=WorklistConfig, description="Modality Worklist.")
    exposure: ExposureConfig = Field(default_factory=ExposureConfig, description="Exposure defaults.")
    spool: SpoolConfig = Field(default_factory=SpoolConfig, description="Durable spool.")
    api: ApiConfig = Field(default_factory=ApiConfig, description="Local API and console.")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="Audit trail shipping.")
    mpps: MppsConfig = Field(default_factory=MppsConfig, description="Modality Performed Procedure Step.")
    dose_report: DoseReportConfig = Field(default_factory=DoseReportConfig,
                                          description="X-Ray Radiation Dose SR (IHE REM).")
    review: ReviewConfig = Field(default_factory=ReviewConfig,
                                 description="The technologist's accept/reject and what a rejection does.")
    presentation: PresentationConfig = Field(default_factory=PresentationConfig,
                                             description="Processing of the For Presentation image.")
    service: ServiceConfig = Field(default_factory=ServiceConfig, description="The daemon.")
    commitment_listener: CommitmentListenerConfig = Field(default_factory=CommitmentListenerConfig,
                                                          description="Storage commitment reports from the archives "
                                                                      "(SCP role).")
    destinations: tuple[DestinationConfig, ...] = Field(
        default=(DestinationConfig(),), min_length=1, description="Archives every image is forwarded to.")
    protocols: tuple[ProtocolConfig, ...] = Field(
        default=DEFAULT_PROTOCOLS, description="The views the console offers; worklist codes select them.")

    @model_validator(mode="after")
    def _unique_destinations(self) -> Config:
        for what, names in (("destination", [d.name for d in self.destinations]),
                            ("protocol", [p.name for p in self.protocols])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} names must be unique: {', '.join(dupes)} appear more than once")
        return self

    def path(self, p: str) -> Path:
        """Resolve a configured path relative to state_dir."""
        q = Path(p)
        return q if q.is_absolute() else Path(self.state_dir) / q


# --- reading ----------------------------------------------------------------------------------


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{p}: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text: {exc}") from None
    return from_dict(raw, source=str(p))


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a parsed config; errors read "<source>: <key path>: <problem>"."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # a list that came out short only because its items failed says nothing more
        errors = [e for e in errors if not (e["type"] == "too_short" and any(
            o is not e and tuple(o["loc"][:len(e["loc"])]) == tuple(e["loc"]) for o in errors))]
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in errors)) from None


def _describe(err: Any) -> str:
    # a key is shown as written, unless it holds something that would break the one-line error
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" if str(p).isprintable() else f".{str(p)!r}"
                  for p in err["loc"]).lstrip(".")
    kind, msg = err["type"], err["msg"]
    value = err.get("input")
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind in ("finite_number",) or (isinstance(value, float) and not math.isfinite(value)):
        msg = f"{value!r} is not a finite number"
    elif kind.startswith(("greater_than", "less_than")):
        msg = f"{value!r} is out of range ({msg.lower()})"
    elif kind in ("int_type", "float_type", "string_type", "bool_type", "model_type", "dict_type",
                  "tuple_type", "int_parsing", "float_parsing"):
        msg = f"{_lower_first(msg)}, got {type(value).__name__} {value!r}"
    elif kind == "literal_error":
        msg = f"{value!r}: {_lower_first(msg)}"
    elif kind == "too_short":
        msg = _lower_first(msg)
    elif kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def check_state_dir(cfg: Config) -> None:
    """ConfigError unless state_dir is (or can be made) a directory this process can write in.

    Tried, not inferred from permissions (root passes every permission check, yet not a
    read-only mount)."""
    d = Path(cfg.state_dir)
    probe_dir = d
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ConfigError(f"state_dir: {probe_dir} is not a directory")
    probe = probe_dir / f".dxgate-check-{os.getpid()}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"state_dir: cannot write in {probe_dir}: {exc.strerror or exc}") from None
