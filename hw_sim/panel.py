"""The simulated flat panel's firmware: control requests, frame readout and transmission.

Knows nothing of pyusb: hw_sim/usb_backend.py puts it on a (simulated) bus. Frames come
from a DetectorModel; an exposed frame reads out only once an X-ray pulse arrived while
armed (synchronised, software-triggered or by automatic exposure detection). Fault injection
corrupts what goes over the wire, never the frame the panel holds, so a RESEND can cure a
transmission error as on real hardware. Held frames survive an unplug (the panel's battery
keeps them), as the protocol's recovery rules expect.

This module holds the control endpoint and what the room does to the panel; its state and
presence on the bus are in `panel_state`, readout and bulk-IN in `panel_readout`, the
fault-injection calls in `panel_faults`.
"""

from __future__ import annotations

import logging
import threading
import time

from hw_sim import usb_wire as w
from hw_sim.collimation import Field
from hw_sim.detector_model import BITS_STORED, MODES
from hw_sim.panel_faults import FaultInjection
from hw_sim.panel_readout import Readout
from hw_sim.panel_state import PanelFaults, SequenceRun, Stall, Unplugged

LOGGER = logging.getLogger(__name__)

__all__ = ["PanelFaults", "SimPanel", "Stall", "Unplugged", "sequence_data"]


class SimPanel(FaultInjection, Readout):
    """One simulated panel. Thread-safe: the host thread and the generator thread both call in."""

    # --- what the room does to the panel ---------------------------------------------------

    def exp_req(self) -> bool:
        """The generator's EXP_REQ on the sync line: EXP_OK (True) only while the panel
        integrates for a synchronised exposure and has received no pulse yet."""
        with self._cond:
            self.exp_requests += 1
            ok = self._armed == w.KIND_EXPOSED and self._pulse is None and self._present and not self.faults.hung
            LOGGER.info("panel %s: EXP_REQ -> %s", self.serial, "EXP_OK" if ok else "not ready")
            return ok

    def xray_pulse(self, kerma_ugy: float, scene: str, field: Field | None = None) -> bool:
        """X-rays reached the panel through ``scene`` and the collimated ``field`` (None: the
        whole panel). Returns whether it was integrating (else the dose is lost)."""
        with self._cond:
            armed = self._armed
            integrating = (
                (armed == w.KIND_EXPOSED)
                or (armed == w.KIND_SOFTWARE and self._window_end is not None
                    and time.monotonic() < self._window_end)
                or (armed == w.KIND_AED and kerma_ugy >= self.aed_threshold_ugy))
            if not integrating or self._pulse is not None:
                self.pulses_lost += 1
                LOGGER.warning("panel %s: X-ray pulse of %.2f uGy while not integrating: lost",
                               self.serial, kerma_ugy)
                return False
            self._pulse = (kerma_ugy, scene, field)
            self._cond.notify_all()
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            if self._sequence is not None:
                self._sequence.stop = True
            self._cond.notify_all()

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def held_frame(self) -> int | None:
        """Number of the frame held for the host (not yet ACKed), if any."""
        with self._cond:
            return self._held[0].number if self._held else None

    @property
    def frames_held(self) -> int:
        with self._cond:
            return len(self._held)

    def wait_frames_held(self, n: int, timeout_s: float) -> bool:
        """Block until at least ``n`` frames are held for the host; whether it happened in time."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._held) >= n, timeout_s)

    # --- control endpoint ------------------------------------------------------------------

    def control_in(self, request: int, value: int, length: int, timeout_s: float | None = None) -> bytes:
        with self._cond:
            self._check_answering(timeout_s)
            if request == w.IDENTIFY:
                data = w.identify_record(
                    vendor=self.vendor, model=self.model_name, serial=self.serial, firmware=self.firmware,
                    modes=[(MODES[m][0], m, MODES[m][1], MODES[m][1], MODES[m][2], BITS_STORED)
                           for m in self.modes])
                self._last_error = w.E_NONE
            elif request == w.STATUS:
                data = self._status_record()
            else:
                self._stall(w.E_BAD_REQUEST, f"unknown IN request 0x{request:02x}")
            return data[:length]

    def _status_record(self) -> bytes:
        if self._held:
            state = w.HOLDING
        elif self._armed is not None or self._sequence is not None:
            state = w.ARMED
        else:
            state = w.IDLE
        flags = (w.FLAG_OVER_TEMPERATURE if self._over_temperature() else 0) | (
            w.FLAG_WIRELESS if self.wireless else 0) | (w.FLAG_SEQUENCE if self._sequence else 0) | (
            w.FLAG_EXP_OK if self._armed == w.KIND_EXPOSED and self._pulse is None else 0)
        return w.status_record(state=state, last_error=self._last_error, mode_id=MODES[self._mode][0],
                               last_frame=self._last_frame, temperature_c=self._temperature_c(),
                               flags=flags, battery=self.battery_percent, link=self.link_quality_percent,
                               held=len(self._held))

    def control_out(self, request: int, value: int, data: bytes = b"", timeout_s: float | None = None) -> None:
        with self._cond:
            self._check_answering(timeout_s)
            if request == w.SET_MODE:
                if self._armed is not None or self._held or self._sequence is not None:
                    self._stall(w.E_BUSY, "SET_MODE while armed or holding a frame")
                names = [m for m in self.modes if MODES[m][0] == value]
                if not names:
                    self._stall(w.E_BAD_MODE, f"no mode id {value}")
                self._mode = names[0]
                self._discard()
            elif request == w.ARM:
                if value not in (w.KIND_DARK, w.KIND_EXPOSED, w.KIND_SOFTWARE, w.KIND_AED):
                    self._stall(w.E_BAD_KIND, f"ARM kind {value}")
                if self._sequence is not None:
                    self._stall(w.E_BUSY, "ARM while a sequence runs")
                if self._over_temperature():
                    self._stall(w.E_OVER_TEMPERATURE, f"ARM at {self._temperature_c():.1f} C "
                                                      f"(limit {self.max_temperature_c:.1f} C)")
                self._discard()
                self._armed, self._pulse = value, None
            elif request == w.TRIGGER:
                if self._armed != w.KIND_SOFTWARE or self._window_end is not None:
                    self._stall(w.E_BUSY, "TRIGGER without a software-trigger arming")
                self._window_end = time.monotonic() + max(value, 1) / 1000.0
                threading.Timer(max(value, 1) / 1000.0, self._notify).start()
            elif request == w.START_SEQUENCE:
                self._start_sequence(data)
            elif request == w.DISARM:
                if self._sequence is not None:
                    self._sequence.stop = True
                    self._sequence = None
                elif self._held or self._pulse is not None:
                    self._stall(w.E_BUSY, "DISARM with X-rays received: read the frame")
                self._armed, self._window_end = None, None
            elif request == w.ACK:
                if self.faults.unplug_at_ack == "before":
                    self._pull_cable()
                    raise Unplugged(f"panel {self.serial} is gone")
                if not self._held:
                    self._stall(w.E_NO_FRAME, "ACK with no frame held")
                if value != self._held[0].number & 0xFFFF:
                    self._stall(w.E_WRONG_FRAME, f"ACK {value} but frame {self._held[0].number} held")
                self._held.popleft()
                self._tx.clear()
                if self._held:
                    self._transmit(self._held[0])
                if self.faults.unplug_at_ack == "after":
                    self._pull_cable()
                    raise Unplugged(f"panel {self.serial} is gone")
            elif request == w.RESEND:
                if not self._held:
                    self._stall(w.E_NO_FRAME, "RESEND with no frame held")
                self._transmit(self._held[0])  # a halted endpoint stays halted until CLEAR_HALT
            else:
                self._stall(w.E_BAD_REQUEST, f"unknown OUT request 0x{request:02x}")
            self._last_error = w.E_NONE
            self._cond.notify_all()

    def clear_halt(self) -> None:
        """CLEAR_FEATURE(ENDPOINT_HALT) on bulk-IN: the endpoint works again (nothing is re-sent)."""
        with self._cond:
            self._check_open()
            self._halted = False

    # --- sequences -------------------------------------------------------------------------

    def _start_sequence(self, data: bytes) -> None:
        if len(data) != w.SEQUENCE_STRUCT.size:
            self._stall(w.E_BAD_REQUEST, f"START_SEQUENCE with {len(data)} data bytes")
        count, period_us, kind = w.SEQUENCE_STRUCT.unpack(data)
        if kind not in (w.KIND_DARK, w.KIND_EXPOSED) or count < 1 or period_us < 1000:
            self._stall(w.E_BAD_KIND, f"START_SEQUENCE count {count} period {period_us} us kind {kind}")
        if self._armed is not None or self._held or self._sequence is not None:
            self._stall(w.E_BUSY, "START_SEQUENCE while armed or holding a frame")
        if self._over_temperature():
            self._stall(w.E_OVER_TEMPERATURE, "START_SEQUENCE over temperature")
        seq = SequenceRun(count, period_us / 1e6, kind)
        self._sequence = seq
        threading.Thread(target=self._run_sequence, args=(seq, self._mode), daemon=True,
                         name=f"sim-panel-sequence-{self.serial}").start()

    def _discard(self) -> None:
        self._held.clear()
        self._tx.clear()
        self._armed, self._pulse, self._window_end = None, None, None


def sequence_data(count: int, period_us: int, kind: int) -> bytes:
    """The data stage of START_SEQUENCE (for tools; the driver has its own encoder)."""
    return w.SEQUENCE_STRUCT.pack(count, period_us, kind)
