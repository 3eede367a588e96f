"""The panel's readout: frames synthesised, held for the host and transmitted on bulk-IN."""

from __future__ import annotations

import logging
import time
import zlib

from hw_sim import usb_wire as w
from hw_sim.collimation import Field
from hw_sim.detector_model import BITS_STORED, DetectorModel
from hw_sim.panel_state import Held, PanelState, SequenceRun, Stall

LOGGER = logging.getLogger(__name__)

SEQUENCE_CACHE_FRAMES = 4  # distinct frames synthesised per sequence, then cycled (readout speed)
MAX_HELD = 16  # frames the panel buffers in a sequence before it waits for the host's ACKs


class Readout(PanelState):
    """Bulk-IN and what feeds it: single frames, sequences, fault-injected transmissions."""

    # --- bulk-IN endpoint ------------------------------------------------------------------

    def bulk_in(self, max_len: int, timeout_s: float | None) -> memoryview:
        """Up to ``max_len`` bytes of the current transfer; blocks until a frame is there."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._check_open()
                if self._halted:
                    raise Stall("bulk-IN endpoint halted")
                if self._tx and not self.faults.hung:
                    return self._take(max_len)
                if not self.faults.hung and self._ready_to_read_out():
                    self._read_out()
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"panel {self.serial}: no frame ready")
                self._cond.wait(remaining)

    def _take(self, max_len: int) -> memoryview:
        chunk = self._tx[0]
        out = chunk[:max_len]
        if len(chunk) > max_len:
            self._tx[0] = chunk[max_len:]
        else:
            self._tx.popleft()
        if len(out) == w.HEADER_SIZE and out[:4] == b"DXFR":
            self._after_header()
        return out

    def _after_header(self) -> None:
        f = self.faults
        if f.stall_payload:
            f.stall_payload -= 1
            self._tx.clear()  # the payload never comes
        elif f.halt_bulk:
            f.halt_bulk -= 1
            self._tx.clear()
            self._halted = True
        elif f.unplug_mid_transfer:
            f.unplug_mid_transfer -= 1
            self._pull_cable()

    def _ready_to_read_out(self) -> bool:
        armed = self._armed
        if armed == w.KIND_DARK:
            return True
        if armed in (w.KIND_EXPOSED, w.KIND_AED):
            return self._pulse is not None
        if armed == w.KIND_SOFTWARE:
            return self._window_end is not None and time.monotonic() >= self._window_end
        return False

    # --- sequences -------------------------------------------------------------------------

    def _run_sequence(self, seq: SequenceRun, mode: str) -> None:
        """Reads out a frame every period on the panel's own clock; a full buffer (the host did
        not ACK) holds the next readout back: frames wait, none is dropped."""
        model = self._model_for(mode)
        kerma = self.fluoro_kerma_ugy if seq.kind == w.KIND_EXPOSED else 0.0
        cache = []
        for _ in range(SEQUENCE_CACHE_FRAMES):
            payload = model.frame(kerma, "open").astype("<u2", copy=False).tobytes()
            cache.append((payload, zlib.crc32(payload)))
        next_at = time.monotonic()
        i = 0
        with self._cond:
            while seq.remaining > 0 and not seq.stop and not self._closed:
                wait = next_at - time.monotonic()
                if wait <= 0 and len(self._held) >= MAX_HELD:
                    self.held_back.set()  # due, but the buffer is full: the host sets the pace
                    self._cond.wait()
                    continue
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                payload, crc = cache[i % len(cache)]
                self._hold_frame(model, seq.kind, payload, crc, kerma)
                i += 1
                seq.remaining -= 1
                next_at = max(next_at + seq.period_s, time.monotonic() - seq.period_s)
            if self._sequence is seq:
                self._sequence = None
            self._cond.notify_all()

    # --- internals (called with the lock held) ---------------------------------------------

    def _read_out(self) -> None:
        kerma, scene, field = self._pulse if self._pulse else (0.0, "open", None)
        kind = self._armed
        assert kind is not None
        model = self._model_for(self._mode)
        payload, crc = self._synthesise(model, kerma, scene, field)
        self._armed, self._pulse, self._window_end = None, None, None
        self._hold_frame(model, w.KIND_DARK if kind == w.KIND_DARK else w.KIND_EXPOSED, payload, crc, kerma)

    def _synthesise(self, model: DetectorModel, kerma: float, scene: str,
                    field: Field | None) -> tuple[bytes, int]:
        if self.frame_cache <= 0:
            payload = model.frame(kerma, scene, field).astype("<u2", copy=False).tobytes()
            return payload, zlib.crc32(payload)
        ring = self._cache.setdefault((self._mode, round(kerma, 3), scene, field), [])
        if len(ring) < self.frame_cache:
            payload = model.frame(kerma, scene, field).astype("<u2", copy=False).tobytes()
            ring.append((payload, zlib.crc32(payload)))
            return ring[-1]
        self._cache_next += 1
        return ring[self._cache_next % len(ring)]

    def _hold_frame(self, model: DetectorModel, kind: int, payload: bytes, crc: int, kerma: float) -> None:
        step = 1
        if self.faults.skip_frame_number:
            self.faults.skip_frame_number -= 1
            step = 2
        number = (self._last_frame + step) & 0xFFFFFFFF
        self._last_frame = number
        header = w.frame_header(frame_number=number, rows=model.rows, columns=model.columns,
                                bits=BITS_STORED, kind=kind, mode_id=model.mode_id,
                                temperature_c=model.temperature_c,
                                timestamp_us=(time.time_ns() // 1000 if self.faults.timestamp_us is None
                                              else self.faults.timestamp_us),
                                payload_length=len(payload), crc32=crc)
        self._held.append(Held(number, header, payload))
        self.frames_read_out += 1
        LOGGER.debug("panel %s: frame %d read out (%s, %.2f uGy)", self.serial, number,
                     "exposed" if kind else "dark", kerma)
        if len(self._held) == 1 and self._present:
            self._transmit(self._held[0])
        self._cond.notify_all()

    def _transmit(self, held: Held) -> None:
        payload = held.payload
        view = memoryview(payload)
        if self.faults.corrupt_crc:
            self.faults.corrupt_crc -= 1
            corrupted = bytearray(payload)
            corrupted[len(corrupted) // 2] ^= 0x10  # one bit flipped on the wire
            view = memoryview(corrupted)
        if self.faults.truncate:
            self.faults.truncate -= 1
            keep = int(len(view) * self.faults.truncate_keep) & ~1
            view = view[:keep]
        header: bytes | bytearray = held.header
        if self.faults.mangle_header:
            self.faults.mangle_header -= 1
            header = bytearray(header)
            header[self.faults.mangle_offset] ^= self.faults.mangle_xor
        self.transmissions += 1
        self._tx.clear()
        self._tx.append(memoryview(header))
        self._tx.append(view)
        self._cond.notify_all()
