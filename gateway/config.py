"""Typed configuration: every key with its type, default, bounds and description in one place.

The file is TOML. Unknown keys, wrong types and out-of-range values are refused with an
error naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError


def setting(default: Any, doc: str, *, lo: float | None = None, hi: float | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """A config field: its default, its description and its bounds, in one place."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": choices}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SiteConfig:
    ae_title: str = setting("DXGATE", "This gateway's own AE title (also the worklist query key).")
    station_name: str = setting("DXROOM1", "Station Name written into every image.")
    institution_name: str = setting("", "Institution Name written into every image.")
    manufacturer: str = setting("dxgate", "Manufacturer written into every image.")
    uid_root: str = setting("2.25", "UID root for generated UIDs; 2.25 derives them from UUIDs.")


@dataclass(frozen=True)
class DetectorConfig:
    driver: str = setting("usb_panel", "Detector driver name from the driver registry.")
    vendor_id: int = setting(0x1209, "USB vendor ID to look for.", lo=0, hi=0xFFFF)
    product_id: int = setting(0x0001, "USB product ID to look for.", lo=0, hi=0xFFFF)
    serial: str = setting("", "Only use the panel with this serial number (empty: the first found).")
    mode: str = setting("2x2", "Readout mode name (the detector lists its modes).")
    usb_backend: str = setting("", "Dotted path 'module:factory' of a pyusb backend; empty: libusb.")
    backend_options: dict = setting({}, "Keyword arguments for the usb_backend factory.")
    frame_timeout_s: float = setting(10.0, "Longest wait for a frame after arming.", lo=0.1, hi=600)
    read_attempts: int = setting(3, "How often a corrupt frame is re-read before failing.", lo=1, hi=10)


@dataclass(frozen=True)
class GeneratorConfig:
    driver: str = setting("serial_generator", "Generator driver name from the driver registry.")
    port: str = setting("/dev/ttyUSB0", "Serial device of the generator.")
    baudrate: int = setting(115200, "Serial speed.", lo=1200, hi=4_000_000)
    timeout_s: float = setting(5.0, "Longest wait for a generator reply.", lo=0.1, hi=120)


@dataclass(frozen=True)
class CalibrationConfig:
    directory: str = setting("calibration", "Where calibration sets live (relative: under state_dir).")
    dark_frames: int = setting(16, "Dark frames averaged into the offset map (16+ finds noisy pixels reliably).",
                               lo=2, hi=256)
    flat_frames: int = setting(8, "Flat-field frames averaged into the gain map.", lo=2, hi=256)
    flat_kvp: float = setting(70.0, "Tube voltage for flat-field exposures.", lo=40, hi=150)
    flat_mas: float = setting(2.0, "Tube current-time product for flat-field exposures.", lo=0.1, hi=100)
    flat_kerma_ugy: float = setting(10.0, "Detector air kerma of one flat field, measured by the engineer (uGy).",
                                    lo=0.01, hi=1000)
    max_age_days: float = setting(180.0, "Refuse a calibration set older than this.", lo=1, hi=3650)


@dataclass(frozen=True)
class WorklistConfig:
    host: str = setting("127.0.0.1", "Worklist (RIS) server host.")
    port: int = setting(104, "Worklist server port.", lo=1, hi=65535)
    called_ae: str = setting("RIS", "Worklist server AE title.")
    modality: str = setting("DX", "Modality queried for.")
    days_ahead: int = setting(0, "Also fetch steps scheduled up to this many days ahead.", lo=0, hi=30)
    timeout_s: float = setting(10.0, "Network timeout for the query.", lo=0.5, hi=300)
    max_query_s: float = setting(30.0, "Longest a whole worklist query may take, answers included.", lo=1, hi=600)
    max_answers: int = setting(2000, "Most answers one worklist query may return; more end the query.",
                               lo=1, hi=100_000)
    cache: str = setting("worklist-cache.json",
                         "Last worklist answer, used while the RIS is unreachable (relative: under state_dir).")


@dataclass(frozen=True)
class DestinationConfig:
    name: str = setting("pacs", "Destination name, used in the queue and in logs.")
    host: str = setting("127.0.0.1", "Archive host.")
    port: int = setting(104, "Archive port.", lo=1, hi=65535)
    called_ae: str = setting("PACS", "Archive AE title.")
    max_pdu: int = setting(131072, "Maximum PDU length offered.", lo=4096, hi=4_194_304)
    timeout_s: float = setting(30.0, "Network timeout for DIMSE and association.", lo=1, hi=600)


@dataclass(frozen=True)
class ExposureConfig:
    kvp: float = setting(80.0, "Default tube voltage.", lo=40, hi=150)
    mas: float = setting(2.0, "Default tube current-time product.", lo=0.1, hi=500)
    target_ei: float = setting(400.0, "Target exposure index (IEC 62494-1).", lo=1, hi=100000)
    body_part: str = setting("CHEST", "Body Part Examined for unscheduled exposures.")
    view_position: str = setting("PA", "View Position.", choices=("PA", "AP", "LL", "RL", "LAT", ""))
    laterality: str = setting("", "Image Laterality for paired body parts (R, L, B); empty for unpaired ones.",
                              choices=("", "R", "L", "B", "U"))


@dataclass(frozen=True)
class SpoolConfig:
    directory: str = setting("spool", "Where DICOM files wait to be forwarded (relative: under state_dir).")
    database: str = setting("state.db", "SQLite state database (relative: under state_dir).")
    min_free_mb: int = setting(512, "Refuse acquisition when the spool disk would fall below this much free space.",
                               lo=0, hi=1_000_000)
    min_free_inodes: int = setting(1000, "Refuse acquisition when a state file system would fall below this many "
                                   "free inodes.", lo=0, hi=1_000_000_000)
    raw_directory: str = setting("raw", "Where raw frames are kept from the moment X-rays may have been delivered "
                                 "until their image is spooled (relative: under state_dir).")
    keep_raw_after_image: bool = setting(False, "Keep each raw frame after its image is spooled (for reprocessing "
                                         "with another calibration); false deletes it once the image is saved.")
    db_busy_timeout_s: float = setting(5.0, "Longest wait for another process's lock on the state database.",
                                       lo=0.1, hi=600)


@dataclass(frozen=True)
class Config:
    state_dir: str = setting("/var/lib/dxgate", "Root of all local state.")
    site: SiteConfig = field(default_factory=SiteConfig, metadata={"doc": "Who this gateway is."})
    detector: DetectorConfig = field(default_factory=DetectorConfig, metadata={"doc": "Flat-panel detector."})
    generator: GeneratorConfig = field(default_factory=GeneratorConfig, metadata={"doc": "X-ray generator."})
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig, metadata={"doc": "Calibration."})
    worklist: WorklistConfig = field(default_factory=WorklistConfig, metadata={"doc": "Modality Worklist."})
    exposure: ExposureConfig = field(default_factory=ExposureConfig, metadata={"doc": "Exposure defaults."})
    spool: SpoolConfig = field(default_factory=SpoolConfig, metadata={"doc": "Durable spool."})
    destinations: tuple[DestinationConfig, ...] = field(
        default=(DestinationConfig(),), metadata={"doc": "Archives every image is forwarded to."})

    def path(self, p: str) -> Path:
        """Resolve a configured path relative to state_dir."""
        q = Path(p)
        return q if q.is_absolute() else Path(self.state_dir) / q


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text: {exc}") from None
    return from_dict(raw, source=str(p))


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a parsed config; errors read "<source>: <key path>: <problem>"."""
    try:
        return _build(Config, raw, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{_at(where)}expected a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{_at(where)}unknown key(s) {', '.join(unknown)} (known: {', '.join(fields)})")
    values = {name: _coerce(hints[name], raw[name], _key(where, name), fields[name].metadata)
              for name in raw}
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str, meta: Any) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected an array of tables")
        return tuple(_coerce(item, v, f"{where}[{i}]", {}) for i, v in enumerate(value))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(f"{where}: {value!r} is outside [{lo}, {hi}]")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
    return value


def to_toml(cfg: Config) -> str:
    """Render a config as TOML (with each key's description as a comment)."""
    out: list[str] = []
    _emit(cfg, "", out)
    return "\n".join(out).lstrip() + "\n"


def _emit(obj: Any, prefix: str, out: list[str]) -> None:
    tables: list[tuple[str, Any]] = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            tables.append((f.name, v))
        elif isinstance(v, tuple) and v and dataclasses.is_dataclass(v[0]):
            tables.append((f.name, v))
        else:
            out.append(f"# {f.metadata.get('doc', '')}")
            out.append(f"{f.name} = {_value(v)}")
    for name, v in tables:
        full = f"{prefix}{name}"
        if isinstance(v, tuple):
            for item in v:
                out.append(f"\n[[{full}]]")
                _emit(item, f"{full}.", out)
        else:
            out.append(f"\n[{full}]")
            _emit(v, f"{full}.", out)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot render {type(v).__name__} as TOML")


__all__ = ["Config", "ConfigError", "load", "from_dict", "to_toml"]
