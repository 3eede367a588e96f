"""The seams between the gateway and the outside world, as structural Protocols.

Drivers implement these without importing them (drivers import only types and errors);
the composition root checks the fit. Tests swap what sits behind a seam (a simulator
behind the pyusb backend, a pty behind the serial port), never the driver in front of it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gateway.types import (
    DetectorInfo,
    DetectorStatus,
    ExposureReadback,
    FrameKind,
    RawFrame,
    ReadoutMode,
    Technique,
)


@runtime_checkable
class Detector(Protocol):
    """A flat-panel detector: configure, arm, read one frame per arming."""

    @property
    def info(self) -> DetectorInfo: ...

    def set_mode(self, name: str) -> ReadoutMode: ...

    def arm(self, kind: FrameKind) -> None:
        """Start integrating. DARK frames read out at once; EXPOSED frames after the X-ray pulse."""

    def read_frame(self, timeout_s: float) -> RawFrame:
        """Read the armed frame; raises FrameError for a corrupt frame (never patches it)."""

    def disarm(self) -> None:
        """End an arming that received no X-rays; DeviceError if X-rays arrived (read the frame)."""

    def temperature_c(self) -> float: ...

    def status(self) -> DetectorStatus:
        """State, temperature, frames held, battery, link; never raises (a silent panel is a state)."""

    def close(self) -> None: ...


@runtime_checkable
class Generator(Protocol):
    """An X-ray generator: set technique, prepare (rotor up), expose, report actual values."""

    def set_technique(self, technique: Technique) -> Technique:
        """Send the technique; returns what the generator accepted."""

    def prepare(self) -> None:
        """Prepare the tube; returns once the generator reports READY."""

    def expose(self) -> ExposureReadback:
        """Fire; returns the delivered values once the exposure is over."""

    def close(self) -> None: ...


@runtime_checkable
class HandSwitch(Protocol):
    """A generator fired by the technologist's hand switch once the host releases an exposure."""

    def enable_hand_switch(self) -> None:
        """Release one exposure (the detector is armed and everything that could refuse the image
        was checked)."""

    def wait_hand_switch(self, timeout_s: float) -> ExposureReadback | None:
        """The delivered values of the exposure the hand switch made, or None within `timeout_s`."""

    def disable_hand_switch(self) -> ExposureReadback | None:
        """Withdraw the release; returns an exposure that raced the withdrawal, if any."""
