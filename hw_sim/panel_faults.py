"""Fault injection for tests: what goes wrong on the wire, on the bus and in the firmware."""

from __future__ import annotations

from hw_sim import usb_wire as w
from hw_sim.panel_state import PanelState


class FaultInjection(PanelState):
    """The panel's fault-injection calls; each transmission or readout consumes one fault."""

    # Each call sets (not adds to) the count of faults still to come; 0 cancels.

    def corrupt_crc(self, n: int = 1) -> None:
        with self._cond:
            self.faults.corrupt_crc = n

    def truncate_next(self, n: int = 1, keep: float = 0.5) -> None:
        with self._cond:
            self.faults.truncate = n
            self.faults.truncate_keep = keep

    def mangle_header(self, offset: int, xor: int = 0x01, n: int = 1) -> None:
        """The next N transmissions carry a header whose byte at `offset` is XORed with `xor`."""
        if not 0 <= offset < w.HEADER_SIZE or not 0 < xor < 256:
            raise ValueError(f"header offset {offset} / xor {xor:#x} out of range")
        with self._cond:
            self.faults.mangle_header, self.faults.mangle_offset, self.faults.mangle_xor = n, offset, xor

    def skip_frame_number(self, n: int = 1) -> None:
        with self._cond:
            self.faults.skip_frame_number = n

    def set_timestamp_us(self, value: int | None) -> None:
        """Stamp every frame from now on with this device time (None: the real clock)."""
        with self._cond:
            self.faults.timestamp_us = value

    def stall_payload(self, n: int = 1) -> None:
        """The next N transmissions stop after the header: the payload never comes."""
        with self._cond:
            self.faults.stall_payload = n

    def halt_bulk(self, n: int = 1) -> None:
        """The next N transmissions halt the bulk-IN endpoint after the header (STALL)."""
        with self._cond:
            self.faults.halt_bulk = n

    def unplug_mid_transfer(self, n: int = 1, replug_after_s: float | None = None) -> None:
        """The next N transmissions lose the cable after the header (plugged back after
        ``replug_after_s`` seconds when given: the panel keeps its held frame meanwhile)."""
        with self._cond:
            self.faults.unplug_mid_transfer = n
            self.faults.replug_after_s = replug_after_s

    def unplug_at_ack(self, when: str, replug_after_s: float | None = None) -> None:
        """The cable goes with the next ACK: "before" it reached the panel (the frame stays held)
        or "after" the panel acted on it (the host never hears that it did)."""
        if when not in ("before", "after"):
            raise ValueError(f"unplug_at_ack: 'before' or 'after', not {when!r}")
        with self._cond:
            self.faults.unplug_at_ack = when
            self.faults.replug_after_s = replug_after_s

    def hang(self, hung: bool = True) -> None:
        """The firmware stops answering (every request times out) until hang(False)."""
        with self._cond:
            self.faults.hung = hung
            self._cond.notify_all()

    def set_battery(self, percent: int | None, link_quality: int | None = None) -> None:
        with self._cond:
            self.battery_percent, self.link_quality_percent = percent, link_quality
