"""The room's devices, opened through the driver registry: detector, generator, the exposure
sequence over them, and the readout mode in use."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drivers import registry
from gateway.acquisition import ExposureSequence
from gateway.alarms import Alarms
from gateway.config import Config
from gateway.ports import Detector, Generator
from gateway.types import CalibrationKey, ReadoutMode

LOGGER = logging.getLogger(__name__)


def open_devices(config: Config, usb_backend: Any | None = None) -> tuple[Detector, Generator, Any]:
    """Open the detector and generator named in the configuration (drivers and backends by
    registered name only; `usb_backend` injects a backend object, for tests and the demo).
    The third value is the backend opened here (its owner closes it), or None."""
    det = config.detector
    backend, owned = usb_backend, None
    if backend is None and det.usb_backend:
        backend = owned = registry.open_usb_backend(det.usb_backend, **det.backend_options)
    try:
        detector = registry.open_detector(det.driver, vendor_id=det.vendor_id, product_id=det.product_id,
                                          serial=det.serial, mode=det.mode, backend=backend,
                                          read_attempts=det.read_attempts)
    except BaseException:
        _close_backend(owned)
        raise
    try:
        gen = config.generator
        generator = registry.open_generator(gen.driver, port=gen.port, baudrate=gen.baudrate,
                                            timeout_s=gen.timeout_s)
    except BaseException:
        detector.close()
        _close_backend(owned)
        raise
    return detector, generator, owned


def _close_backend(backend: Any) -> None:
    close = getattr(backend, "close", None)
    if callable(close):
        close()


@dataclass
class Hardware:
    detector: Detector
    generator: Generator
    mode: ReadoutMode
    sequence: ExposureSequence
    backend: Any = None  # a pyusb backend opened for this hardware (closed with it)

    @property
    def calibration_key(self) -> CalibrationKey:
        return CalibrationKey(self.detector.info.serial, self.mode.name)

    def close(self) -> None:
        self.generator.close()
        self.detector.close()
        _close_backend(self.backend)


def open_hardware(config: Config, *, alarms: Alarms, usb_backend: Any | None = None,
                  clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Hardware:
    detector, generator, backend = open_devices(config, usb_backend)
    try:
        mode = detector.info.mode(config.detector.mode)
        sequence = ExposureSequence(detector, generator, alarms=alarms,
                                    frame_timeout_s=config.detector.frame_timeout_s, clock=clock)
    except BaseException:
        generator.close()  # leave no USB interface claimed, no pty open
        detector.close()
        _close_backend(backend)
        raise
    return Hardware(detector=detector, generator=generator, mode=mode, sequence=sequence, backend=backend)
