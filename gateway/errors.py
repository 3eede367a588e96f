"""Errors shared by every layer. Each names the problem so that an operator can act on it."""

from __future__ import annotations


class DxgateError(Exception):
    """Base of every error dxgate raises on purpose."""


class ConfigError(DxgateError):
    """The configuration file is missing, malformed, or has a wrong or unknown key."""


class DeviceError(DxgateError):
    """A hardware device is absent, refused a command, or answered outside its protocol."""


class DeviceNotFound(DeviceError):
    """No device with the configured identity is attached."""


class FrameError(DeviceError):
    """A frame arrived corrupt (bad CRC, wrong size, missed frame number). Never becomes an image."""


class GeneratorError(DeviceError):
    """The X-ray generator refused a command, reported a fault, or sent a garbled line."""


class CalibrationError(DxgateError):
    """A calibration set is missing, corrupt, expired, or for another detector or mode."""


class WorklistError(DxgateError):
    """The worklist server could not be queried or answered something malformed."""


class SpoolError(DxgateError):
    """An instance could not be made durable; the exposure is NOT saved."""


class ForwardError(DxgateError):
    """Sending an instance to a destination failed."""
