"""What every routes module is built from: the gateway, its metrics, events and the daemon's hooks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.events import EventBus
from gateway.metrics import Metrics

Require = Callable[[str], Any]  # role -> FastAPI dependency yielding the user


@dataclass
class CalibrationJob:
    """The one calibration that may run at a time, and what the console shows of it."""

    state: str = "idle"  # idle, running, done, failed
    step: str = ""
    done: int = 0
    total: int = 0
    calibration_id: str = ""
    error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class ApiContext:
    gateway: Gateway
    metrics: Metrics
    events: EventBus
    extra_status: Callable[[], dict[str, Any]] = dict
    audit_query: Callable[..., list[dict[str, Any]]] | None = None
    calibration: CalibrationJob = field(default_factory=CalibrationJob)
    config_path: Path | None = None  # the configuration file admins may change (None: not over this API)
    reload_config: Callable[[], str] | None = None  # what SIGHUP does, waited for: the daemon's outcome
    on_config_change: Callable[[str, bool, str], None] | None = None  # (admin, done, description): audit
