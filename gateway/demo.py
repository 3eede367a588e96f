"""`dxgate demo`: the whole path on embedded defaults, in one process, in under two minutes.

The simulator stands in for the hardware and is reached the way hardware is: through the
driver's seams (a pyusb backend and a serial pty), loaded by dotted path so that no
runtime module imports it. The RIS and PACS are embedded pynetdicom peers on loopback.

After the exposures (unless --once or --json) the daemon, handed in by the command line (this
layer sits below gateway.service), serves the console on the same simulator, peers and state
directory, with log-ins made for the run, until SIGINT or SIGTERM. The simulated hand switch
is pressed by the demo itself once the console's Ready has released an exposure
(`DemoHandSwitch`): demo-only, nothing of it is on the production path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

from drivers.registry import load_simulator
from gateway.app import Gateway
from gateway.config import (
    ApiConfig,
    Config,
    DestinationConfig,
    DetectorConfig,
    ExposureConfig,
    GeneratorConfig,
    ServiceConfig,
    SpoolConfig,
    WorklistConfig,
    to_toml,
)
from gateway.dicom import new_uid
from gateway.events import EventBus
from gateway.peers import StorageServer, WorklistServer, make_worklist_entry
from gateway.users import AuthError, UserStore

LOGGER = logging.getLogger(__name__)

SIMULATOR = "room"  # registered in the dxgate.simulators entry-point group
DEMO_PATIENTS = [("Doe^Jane", "F", "19680412"), ("Müller^Jürgen", "M", "19551103"),
                 ("Παπαδόπουλος^Νίκος", "M", "19790228"), ("Nakamura^Yuki", "F", "19900715")]
FORWARD_DEADLINE_S = 60.0
CONSOLE_ENTRIES = 3  # scheduled steps left on the worklist for the console, besides the exposed ones
DEMO_USERS = (("demo-tech", "technologist"), ("demo-engineer", "engineer"), ("demo-admin", "admin"))
PRESS_AFTER_S = 1.0  # the console shows "ready" this long before the simulated hand switch fires


class SimulatedGenerator(Protocol):
    def press(self) -> bool: ...


class SimulatedRoom(Protocol):
    """What the demo needs of the simulator: the hardware seams and a hand to place objects."""

    def usb_backend(self) -> Any: ...
    def start_generator(self) -> str: ...
    def place(self, scene: str) -> None: ...
    def close(self) -> None: ...
    @property
    def generator(self) -> SimulatedGenerator: ...


class RunningConsole(Protocol):
    """What the demo needs of the running daemon (gateway.service.daemon.Daemon)."""

    api_port: int | None
    events: EventBus

    def request(self, command: str) -> None: ...


# (config file, pyusb backend, on_ready) -> exit code; blocks until SIGINT or SIGTERM.
ServeConsole = Callable[[Path, Any, Callable[[RunningConsole], None]], int]


class DemoHandSwitch:
    """Demo only: the technologist's hand, one press per Ready on the console.

    The daemon keeps an armed exam released to the hand switch after each exposure (a real
    technologist presses again when ready), so pressing on every release would expose on and
    on. Instead the console's Ready (the "exam armed" event) asks for one press, made
    `press_after_s` after the release is waiting for the hand switch (the sequence's "ready"
    event with that detail, or already waiting when Ready came); a release nobody asked for —
    the one that follows each exposure, a software trigger's — is left alone.
    """

    def __init__(self, press: Callable[[], bool], events: EventBus, press_after_s: float = PRESS_AFTER_S) -> None:
        self._press, self._after = press, press_after_s
        self._sub = events.subscribe()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-hand-switch", daemon=True)

    def start(self) -> DemoHandSwitch:
        self._thread.start()
        return self

    def _run(self) -> None:
        asked = waiting = False  # a Ready not yet answered; a release waiting for the hand switch
        while not self._stop.is_set():
            event = self._sub.get(timeout=0.5)  # bounded, so that stop() is seen
            if event is None:
                continue
            if event.kind == "exam":  # anything but "armed" (disarmed, a new view, closed) withdraws the release
                asked = event.data.get("state") == "armed"
                waiting = waiting and asked
            elif event.kind == "exposure":
                waiting = event.data.get("state") == "ready" and "hand switch" in str(event.data.get("detail", ""))
                if waiting and not asked:
                    LOGGER.info("demo: a release without a Ready on the console; the hand switch is left alone")
            else:
                continue
            if asked and waiting:
                asked = waiting = False
                self._press_once()

    def _press_once(self) -> None:
        if self._stop.wait(self._after):
            return
        try:
            fired = self._press()
        except Exception:  # the simulator closing under it: the demo is stopping
            LOGGER.exception("demo: the simulated hand switch could not be pressed")
            return
        LOGGER.info("demo: simulated hand switch pressed (%s)", "X-rays" if fired else "refused: not released")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sub.close()


@dataclass(frozen=True)
class DemoImage:
    accession_number: str
    sop_instance_uid: str
    exposure_index: float | None
    deviation_index: float | None
    status: str


def _log_level() -> str:
    level = logging.getLogger().getEffectiveLevel()
    return "debug" if level <= logging.DEBUG else "info" if level <= logging.INFO else "warning"


def demo_config(home: Path, generator_port: str, worklist_port: int, pacs_port: int, api_port: int = 0) -> Config:
    return Config(
        state_dir=str(home),
        detector=DetectorConfig(mode="2x2"),
        exposure=ExposureConfig(kvp=80.0, mas=1.2),  # chest PA behind the phantom: EI near target
        generator=GeneratorConfig(port=generator_port),
        worklist=WorklistConfig(host="127.0.0.1", port=worklist_port, called_ae="DEMO_RIS"),
        spool=SpoolConfig(),
        destinations=(DestinationConfig(name="demo-pacs", host="127.0.0.1", port=pacs_port, called_ae="DEMO_PACS"),),
        api=ApiConfig(host="127.0.0.1", port=api_port),  # 0: any free port, printed once listening
        service=ServiceConfig(log_level=_log_level(), stop_timeout_s=10),  # the daemon keeps the -v level
    )


def demo_logins(config: Config) -> list[tuple[str, str, str]]:
    """(role, user, password) of the console's demo users, with passwords new for this run."""
    store = UserStore(config.path(config.spool.database), min_password_length=config.api.min_password_length,
                      busy_timeout_s=config.spool.db_busy_timeout_s)
    logins = []
    try:
        for name, role in DEMO_USERS:
            password = secrets.token_urlsafe(12)
            try:
                store.add(name, role, password)
            except AuthError:  # a --home used before: the user exists, it gets this run's password
                store.set_password(name, password)
                store.set_disabled(name, False)
            logins.append((role, name, password))
    finally:
        store.close()
    return logins


def scheduled_entries(count: int, station_ae: str, uid_root: str, now: datetime) -> list[Any]:
    stamp = now.strftime("%y%m%d%H%M%S")
    entries = []
    for i in range(count):
        name, sex, birth = DEMO_PATIENTS[i % len(DEMO_PATIENTS)]
        entries.append(make_worklist_entry(
            patient_name=name, patient_id=f"DEMO{i + 1:04d}", birth_date=birth, sex=sex,
            accession=f"A{stamp}{i + 1:02d}", study_uid=new_uid(uid_root),
            requested_procedure_id=f"RP{i + 1:04d}", sps_id=f"SPS{i + 1:04d}",
            sps_description="Chest PA", station_ae=station_ae, start=now))
    return entries


def forward_until_done(gateway: Gateway, deadline_s: float) -> None:
    """Send the backlog; a transient failure is retried after its backoff, until the deadline."""
    deadline = time.monotonic() + deadline_s
    gateway.forward_due()
    while gateway.spool.counts().get("pending", 0) and time.monotonic() < deadline:
        next_at = gateway.spool.next_attempt_at() or time.time()
        time.sleep(min(max(0.0, next_at - time.time()), max(0.0, deadline - time.monotonic())))
        gateway.forward_due()


def run_demo(*, home: Path | None, exposures: int, as_json: bool, out: TextIO, serve: ServeConsole | None = None,
             api_port: int = 0, press_after_s: float = PRESS_AFTER_S) -> int:
    """The exposures, their summary on `out`; then, with `serve`, the console until SIGINT or SIGTERM."""
    made_home = home is None
    home = Path(tempfile.mkdtemp(prefix="dxgate-demo-")) if home is None else home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    now = datetime.now(UTC)
    room: SimulatedRoom = load_simulator(SIMULATOR)(seed=7)
    defaults = Config()
    scheduled = exposures + (CONSOLE_ENTRIES if serve is not None else 0)
    wl = WorklistServer(scheduled_entries(scheduled, defaults.site.ae_title, defaults.site.uid_root, now),
                        ae_title="DEMO_RIS")
    pacs = StorageServer(home / "pacs", ae_title="DEMO_PACS")
    try:
        config = demo_config(home, room.start_generator(), wl.start(), pacs.start(), api_port)
        config_path = home / "dxgate.toml"
        config_path.write_text(
            "# The configuration `dxgate demo` ran with (simulator, embedded peers on loopback).\n"
            + to_toml(config), encoding="utf-8")
        images, calibrated = _expose(config, room, exposures)
        summary = {"home": str(home), "calibrated_now": calibrated, "seconds": round(time.monotonic() - started, 1),
                   "received_by_pacs": len(list((home / "pacs").glob("*.dcm"))),
                   "images": [dataclasses.asdict(img) for img in images]}
        _report(summary, images, as_json=as_json, made_home=made_home, out=out)
        code = 0 if all(part.endswith(":sent") for img in images for part in img.status.split(",")) else 1
        if serve is not None:
            done = {img.accession_number for img in images}  # a RIS drops the steps performed
            wl.items = [item for item in wl.items if item.AccessionNumber not in done]
            served = _serve_console(serve, config_path, config, room, out, press_after_s)
            code = code or served
    finally:
        wl.stop()
        pacs.stop()
        room.close()
    return code


def _expose(config: Config, room: SimulatedRoom, exposures: int) -> tuple[list[DemoImage], bool]:
    """Calibrate if needed, make the exposures and forward them; the images and whether calibrated now."""
    gateway = Gateway(config, usb_backend=room.usb_backend())
    try:
        calibrated = False
        if not gateway.has_calibration():
            room.place("open")
            gateway.calibrate(operator="demo")
            calibrated = True
        items = gateway.worklist().items
        if not items:
            raise RuntimeError("the embedded worklist returned no scheduled step")
        room.place("chest")
        acquired = []
        for n in range(exposures):
            exam = gateway.open_exam(items[n % len(items)])
            acquired.append(gateway.expose(exam))
        for acq in acquired:  # the demo's technologist accepts them: the review hold lets them go now
            for uid in filter(None, (acq.instance.sop_instance_uid, acq.processing_uid)):
                gateway.spool.release_held(uid)
        forward_until_done(gateway, FORWARD_DEADLINE_S)
        images = []
        for acq in acquired:
            states = {d.destination: d.state for d in gateway.spool.deliveries(acq.instance.sop_instance_uid)}
            images.append(DemoImage(
                accession_number=acq.instance.accession_number, sop_instance_uid=acq.instance.sop_instance_uid,
                exposure_index=round(acq.exposure_index.ei, 1) if acq.exposure_index else None,
                deviation_index=round(acq.exposure_index.deviation_index, 2) if acq.exposure_index else None,
                status=",".join(f"{k}:{v}" for k, v in sorted(states.items()))))
        return images, calibrated
    finally:
        gateway.close()


def _report(summary: dict[str, Any], images: list[DemoImage], *, as_json: bool, made_home: bool,
            out: TextIO) -> None:
    if as_json:
        json.dump(summary, out, indent=2)
        out.write("\n")
        return
    for img in images:
        index = (f"EI={img.exposure_index:g} DI={img.deviation_index:+.1f}"
                 if img.exposure_index is not None and img.deviation_index is not None else "EI=n/a")
        out.write(f"{img.accession_number}  {img.sop_instance_uid}  {index}  {img.status}\n")
    out.write(f"{len(images)} image(s) in {summary['seconds']} s; "
              f"calibration {'made now' if summary['calibrated_now'] else 'reused'}; "
              f"PACS copies in {Path(summary['home']) / 'pacs'}\n")
    if made_home:
        out.write(f"everything this run made is under {summary['home']}\n")
    out.flush()


def _serve_console(serve: ServeConsole, config_path: Path, config: Config, room: SimulatedRoom, out: TextIO,
                   press_after_s: float) -> int:
    """The daemon on the demo's room and state, with this run's log-ins, until SIGINT or SIGTERM."""
    logins = demo_logins(config)
    hand: list[DemoHandSwitch] = []

    def ready(console: RunningConsole) -> None:
        try:
            hand.append(DemoHandSwitch(lambda: room.generator.press(), console.events, press_after_s).start())
            out.write(f"\nconsole: http://127.0.0.1:{console.api_port}/\n"
                      "log-ins (made for this run; the passwords are new each run):\n")
            for role, name, password in logins:
                out.write(f"  {role:<13} {name:<14} {password}\n")
            out.write(f"hand switch: simulated; the demo presses it once per Ready on the console, "
                      f"{press_after_s:g} s after the release\n"
                      "Ctrl-C stops the demo\n")
            out.flush()
        except Exception:  # nobody could use the console: stop rather than run unseen
            LOGGER.exception("demo: the console's address could not be shown")
            console.request("stop")

    try:
        return serve(config_path, room.usb_backend(), ready)
    finally:
        for h in hand:
            h.stop()
