"""A simulated X-ray room: one panel on a simulated USB bus, one generator on a pty, a scene.

The generator's EXPOSE delivers air kerma to the room, which hands it to the panel; an
exposed frame armed on the panel reads out only after that pulse (a threading.Condition
in the panel, no polling). Reach it from configuration by dotted path:
``hw_sim.room:open_room`` (see :func:`open_room`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence

from hw_sim.collimation import SCATTER_FRACTION, Field
from hw_sim.detector_model import MODES, DetectorModel
from hw_sim.generator import SimGenerator
from hw_sim.panel import SimPanel
from hw_sim.phantoms import SCENES, scene_truth
from hw_sim.usb_backend import SimUsbBackend

LOGGER = logging.getLogger(__name__)

# Air kerma at the detector, open field (docs/simulator.md):
#   K = KERMA_PER_MAS * mAs * (kVp / 80)**2 * (SID_REF / SID)**2 * exp(-MU_AL * (filtration - FILTRATION_REF))
# so that 70 kV, 2 mAs at 180 cm with 2.5 mm Al gives 10 uGy (a typical chest PA detector dose).
KERMA_PER_MAS_UGY = 10.0 / (2.0 * (70.0 / 80.0) ** 2)
SID_REF_CM = 180.0  # source-to-image distance of KERMA_PER_MAS_UGY
FILTRATION_REF_MM_AL = 2.5  # total filtration of KERMA_PER_MAS_UGY
FILTRATION_MU_PER_MM_AL = 0.12  # effective attenuation of added filtration (80 kV beam)


def kerma_at_detector_ugy(kvp: float, mas: float, *, distance_cm: float = SID_REF_CM,
                          filtration_mm_al: float = FILTRATION_REF_MM_AL) -> float:
    """Incident air kerma (uGy) at the detector plane, no patient, for a technique: square of
    kV, linear in mAs, inverse square of the distance, exponential in filtration."""
    if kvp <= 0 or mas < 0 or distance_cm <= 0 or filtration_mm_al < 0:
        raise ValueError(f"technique {kvp} kV {mas} mAs {distance_cm} cm {filtration_mm_al} mm Al out of range")
    return (KERMA_PER_MAS_UGY * mas * (kvp / 80.0) ** 2 * (SID_REF_CM / distance_cm) ** 2
            * math.exp(-FILTRATION_MU_PER_MM_AL * (filtration_mm_al - FILTRATION_REF_MM_AL)))


class SimRoom:
    """The simulator's whole room. Thread-safe; close() when done."""

    def __init__(self, seed: int = 1, *, serial: str = "SIM-0001", modes: Sequence[str] = tuple(MODES),
                 temperature_c: float = 30.0, prep_time_s: float = 0.0,
                 counts_per_ugy: float = 400.0, wireless: bool = False, sync_link: bool = False,
                 heartbeat_timeout_s: float | None = None, frame_cache: int = 0, nonlinearity: float = 0.0) -> None:
        self.seed = seed
        self.nonlinearity = nonlinearity  # per-pixel response compression of the panel (DetectorModel; 0: linear)
        self.serial = serial
        self._lock = threading.Lock()
        self._models: dict[str, DetectorModel] = {}
        self._scene = "open"
        self._field: Field | None = None  # collimated field (None: the whole panel)
        self.distance_cm = SID_REF_CM
        self.filtration_mm_al = FILTRATION_REF_MM_AL
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
                                  temperature_c=self._temperature_c, nonlinearity=self.nonlinearity)
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
        """Put something between tube and panel: "open" (nothing), "chest", "hand" or "qc"."""
        if scene not in SCENES:
            raise ValueError(f"unknown scene {scene!r}; scenes: {', '.join(SCENES)}")
        with self._lock:
            self._scene = scene

    @property
    def scene(self) -> str:
        with self._lock:
            return self._scene

    @property
    def panel_mm(self) -> float:
        """The side of the panel's (square) active area in mm."""
        _, n, pitch = MODES[self.panel.modes[0]]
        return n * pitch

    def collimate(self, field: Field | None) -> None:
        """Set the collimated field (None: open the collimator to the whole panel)."""
        if field is not None and (field.right_mm > self.panel_mm + 1e-6 or field.bottom_mm > self.panel_mm + 1e-6):
            raise ValueError(f"collimated field {field.as_list()} mm beyond the {self.panel_mm:.1f} mm panel")
        with self._lock:
            self._field = field

    @property
    def field(self) -> Field | None:
        with self._lock:
            return self._field

    def ground_truth(self, mode: str) -> dict[str, object]:
        """What the next exposure shows in ``mode``'s pixels: the scene's known values and the
        collimated field (JSON-ready; hw_sim.phantoms.scene_truth)."""
        _, n, pitch = MODES[mode]
        with self._lock:
            scene, field = self._scene, self._field
        truth = scene_truth(scene, n, pitch)
        truth["field_mm"] = None if field is None else field.as_list()
        truth["field_pixels"] = None if field is None else list(field.pixels(n, pitch))
        truth["scatter_fraction"] = SCATTER_FRACTION
        return truth

    def deliver(self, kvp: float, mas: float) -> float:
        """An X-ray pulse: air kerma (uGy) at the detector plane, handed to the panel."""
        kerma = kerma_at_detector_ugy(kvp, mas, distance_cm=self.distance_cm, filtration_mm_al=self.filtration_mm_al)
        with self._lock:
            self.pulses.append((kvp, mas, kerma))
            scene, field = self._scene, self._field
        self.panel.xray_pulse(kerma, scene, field)
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
