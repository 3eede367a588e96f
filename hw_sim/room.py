"""A simulated X-ray room: one panel on a simulated USB bus, one generator on a pty, a scene.

The generator's EXPOSE delivers air kerma to the room, which hands it to the panel; an
exposed frame armed on the panel reads out only after that pulse (a threading.Condition
in the panel, no polling). Reach it from configuration by dotted path:
``hw_sim.room:open_room`` (see :func:`open_room`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from hw_sim.detector_model import MODES, DetectorModel
from hw_sim.generator import SimGenerator
from hw_sim.panel import SimPanel
from hw_sim.usb_backend import SimUsbBackend

LOGGER = logging.getLogger(__name__)

# Air kerma at the detector, open field: KERMA_PER_MAS * mAs * (kVp / 80)**2 uGy, so that
# 70 kV, 2 mAs gives 10 uGy (a typical chest PA detector dose).
KERMA_PER_MAS_UGY = 10.0 / (2.0 * (70.0 / 80.0) ** 2)
SCENES = ("open", "chest")


def kerma_at_detector_ugy(kvp: float, mas: float) -> float:
    """Incident air kerma at the detector plane (no patient) for a technique."""
    return KERMA_PER_MAS_UGY * mas * (kvp / 80.0) ** 2


class SimRoom:
    """The simulator's whole room. Thread-safe; close() when done."""

    def __init__(self, seed: int = 1, *, serial: str = "SIM-0001", modes: Sequence[str] = tuple(MODES),
                 temperature_c: float = 30.0, prep_time_s: float = 0.0,
                 counts_per_ugy: float = 400.0, wireless: bool = False, sync_link: bool = False,
                 heartbeat_timeout_s: float | None = None, frame_cache: int = 0) -> None:
        self.seed = seed
        self.serial = serial
        self._lock = threading.Lock()
        self._models: dict[str, DetectorModel] = {}
        self._scene = "open"
        self._temperature_c = temperature_c
        self._counts_per_ugy = counts_per_ugy
        self._prep_time_s = prep_time_s
        self.heartbeat_timeout_s = heartbeat_timeout_s  # the generator's heartbeat watchdog (None: off)
        self.sync_link = sync_link  # the generator fires only on the panel's EXP_OK (synchronised trigger)
        self.panel = SimPanel(serial=serial, modes=modes, model_for=self.model,
                              temperature_c=lambda: self.temperature_c, wireless=wireless,
                              frame_cache=frame_cache)
        self._backend: SimUsbBackend | None = None
        self._generator: SimGenerator | None = None
        self.pulses: list[tuple[float, float, float]] = []  # (kvp, mas, kerma uGy) delivered

    # --- the panel's physics ---------------------------------------------------------------

    def model(self, mode: str) -> DetectorModel:
        """The DetectorModel of ``mode`` (built on first use; it holds the ground truth)."""
        with self._lock:
            m = self._models.get(mode)
            if m is None:
                m = DetectorModel(mode, self.seed, counts_per_ugy=self._counts_per_ugy,
                                  temperature_c=self._temperature_c)
                self._models[mode] = m
            return m

    @property
    def temperature_c(self) -> float:
        with self._lock:
            return self._temperature_c

    def set_temperature(self, celsius: float) -> None:
        """Warm or cool the panel: the offset drifts with temperature (DetectorModel)."""
        with self._lock:
            self._temperature_c = celsius
            for m in self._models.values():
                m.temperature_c = celsius

    def place(self, scene: str) -> None:
        """Put something between tube and panel: "open" (nothing) or "chest"."""
        if scene not in SCENES:
            raise ValueError(f"unknown scene {scene!r}; scenes: {', '.join(SCENES)}")
        with self._lock:
            self._scene = scene

    @property
    def scene(self) -> str:
        with self._lock:
            return self._scene

    def deliver(self, kvp: float, mas: float) -> float:
        """An X-ray pulse: air kerma (uGy) at the detector plane, handed to the panel."""
        kerma = kerma_at_detector_ugy(kvp, mas)
        with self._lock:
            self.pulses.append((kvp, mas, kerma))
            scene = self._scene
        self.panel.xray_pulse(kerma, scene)
        return kerma

    # --- fault injection (shortcuts to the panel's and the generator's) ---------------------

    def inject_crc_errors(self, n: int = 1) -> None:
        """The next ``n`` frame transmissions (re-sends included) fail their CRC."""
        self.panel.corrupt_crc(n)

    def truncate_frames(self, n: int = 1, keep: float = 0.5) -> None:
        """The next ``n`` frame transmissions end after ``keep`` of the payload."""
        self.panel.truncate_next(n, keep)

    def skip_frame_number(self, n: int = 1) -> None:
        """The next ``n`` readouts skip a frame number (as if a frame was lost)."""
        self.panel.skip_frame_number(n)

    # --- the devices, as the gateway reaches them ------------------------------------------

    def usb_backend(self) -> SimUsbBackend:
        """The pyusb backend with this room's panel on it (pass as ``backend=``)."""
        with self._lock:
            if self._backend is None:
                self._backend = SimUsbBackend([self.panel])
            return self._backend

    def start_generator(self) -> str:
        """Start the generator (once) and return its pty path for pyserial."""
        with self._lock:
            if self._generator is None:
                self._generator = SimGenerator(self.deliver, seed=self.seed, prep_time_s=self._prep_time_s,
                                               exp_req=self.panel.exp_req if self.sync_link else None,
                                               heartbeat_timeout_s=self.heartbeat_timeout_s)
            return self._generator.path

    @property
    def generator(self) -> SimGenerator:
        """The running generator (for fault injection); start_generator() first."""
        with self._lock:
            if self._generator is None:
                raise RuntimeError("generator not started; call start_generator()")
            return self._generator

    def close(self) -> None:
        with self._lock:
            gen, self._generator = self._generator, None
        self.panel.close()
        if gen is not None:
            gen.close()

    def __enter__(self) -> SimRoom:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_room(*, seed: int = 1, serial: str = "SIM-0001", modes: Sequence[str] = tuple(MODES),
              temperature_c: float = 30.0, prep_time_s: float = 0.0, counts_per_ugy: float = 400.0) -> SimRoom:
    """Factory for configuration (``hw_sim.room:open_room``): SimRoom with keyword options only."""
    return SimRoom(seed, serial=serial, modes=modes, temperature_c=temperature_c, prep_time_s=prep_time_s,
                   counts_per_ugy=counts_per_ugy)
