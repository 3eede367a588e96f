"""Typed configuration (pydantic v2): every key with its type, default, bounds and description.

The file is TOML. Unknown keys, wrong types, NaN or infinite numbers, values out of range and
combinations the gateway would refuse later (an AE title pynetdicom cannot send, a paired body
part without laterality, two destinations of one name, a UID root with no room for a unique
suffix) are refused when the file is read, with an error naming the key: a configuration that
`check-config` accepts is one the gateway runs with.

Shared field types and validators are in `fields`; the sections in `hardware`, `network`,
`workflow` and `service`; the root `Config` and reading it in `root`; the TOML writer in `writer`.
"""

from gateway.config.fields import (
    AE_MAX,
    AETitle,
    Host,
    Number,
    OptionalPath,
    PortNumber,
    RegisteredName,
    StatePath,
    Text16,
    Text64,
)
from gateway.config.hardware import (
    CalibrationConfig,
    CalibrationLimitsConfig,
    DetectorConfig,
    GeneratorConfig,
    QaLimitsConfig,
    SiteConfig,
)
from gateway.config.network import CommitmentListenerConfig, DateRange, DestinationConfig, Modality, WorklistConfig
from gateway.config.root import RELOADABLE_SECTIONS, Config, check_state_dir, from_dict, load
from gateway.config.service import ApiConfig, AuditConfig, ServiceConfig, SpoolConfig
from gateway.config.workflow import (
    DEFAULT_PROTOCOLS,
    DoseReportConfig,
    ExposureConfig,
    Laterality,
    MppsConfig,
    PresentationConfig,
    ProtocolConfig,
    ReviewConfig,
    ViewPosition,
)
from gateway.config.writer import to_toml
from gateway.errors import ConfigError

__all__ = ["AE_MAX", "DEFAULT_PROTOCOLS", "RELOADABLE_SECTIONS", "AETitle", "ApiConfig", "AuditConfig",
           "CalibrationConfig", "CalibrationLimitsConfig", "CommitmentListenerConfig", "Config", "ConfigError",
           "DateRange", "DestinationConfig", "DetectorConfig", "DoseReportConfig", "ExposureConfig", "GeneratorConfig",
           "Host", "Laterality", "Modality", "MppsConfig", "Number", "OptionalPath", "PortNumber", "PresentationConfig",
           "ProtocolConfig", "QaLimitsConfig", "RegisteredName", "ReviewConfig", "ServiceConfig", "SiteConfig",
           "SpoolConfig", "StatePath", "Text16", "Text64", "ViewPosition", "WorklistConfig", "check_state_dir",
           "from_dict", "load", "to_toml"]
