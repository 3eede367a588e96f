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


class GeneratorRefused(GeneratorError):
    """The generator answered a command with an explicit refusal (ERR): it did not act on it,
    so an EXPOSE refused this way delivered no X-rays."""


class CalibrationError(DxgateError):
    """A calibration set is missing, corrupt, expired, or for another detector or mode."""


class WorklistError(DxgateError):
    """The worklist server could not be queried or answered something malformed."""


class SpoolError(DxgateError):
    """An instance could not be made durable; the exposure is NOT saved."""


class ForwardError(DxgateError):
    """Sending an instance to a destination failed."""


class ExposureRefused(DxgateError):
    """A check before the tube fires failed: no X-rays were given. The message says what to fix."""


class FrameKeptError(DxgateError):
    """X-rays were given and the frame is kept, but its image could not be made or saved yet.

    `kept_id` names the kept raw frame; `dxgate reprocess` makes the image once the cause
    is fixed. `kept_id` is empty when even the raw frame could not be written to disk (it is
    then held in memory and further exposures are refused until it is written).
    """

    def __init__(self, message: str, kept_id: str = "") -> None:
        super().__init__(message)
        self.kept_id = kept_id


class DaemonUnreachable(DxgateError):
    """No running daemon answers on its API socket (the CLI exits 3, as systemctl does)."""
