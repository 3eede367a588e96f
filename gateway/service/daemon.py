"""`dxgate run`: the gateway as a long-running service.

One process per detector. The main thread only handles signals (their handlers enqueue, the
main loop acts, as gunicorn does); the work runs on threads: the forwarder, the worklist
refresher, the hand-switch loop and the local API (uvicorn). READY=1 goes to systemd once every
one of them is up; WATCHDOG=1 only while every stage's heartbeat is fresh.

- SIGTERM / SIGINT: stop taking exposures, let an exposure in progress finish (readout and
  spooling), end associations cleanly, exit within `service.stop_timeout_s`.
- SIGHUP: reload destinations, worklist settings and log level; an invalid file keeps the
  running configuration and says why.
"""

from __future__ import annotations

import gc
import json
import logging
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from gateway import config as config_module
from gateway import logsafe, presentation
from gateway.app import Gateway
from gateway.audit import AuditTrail, Outcome
from gateway.audit import messages as audit_msg
from gateway.config import Config
from gateway.errors import DxgateError, ExposureRefused, FrameKeptError
from gateway.events import EventBus
from gateway.forward import DeliveryResult
from gateway.forward import Outcome as Delivery
from gateway.heartbeat import Heartbeats
from gateway.metrics import Metrics
from gateway.offset_refresh import for_gateway as offset_refresh_for
from gateway.service import local_socket
from gateway.service.memory import release_compiler_pages
from gateway.service.notify import Watchdog, notify
from gateway.service.web import build_app
from gateway.users import UserStore

LOGGER = logging.getLogger(__name__)

RELOADABLE = ("destinations", "worklist", "log_level")


class _JsonLines(logging.Formatter):
    """One structured line per event for journald (no patient data: see gateway.logsafe)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                "msg": record.getMessage()}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logsafe.install()


class Daemon:
    """Build, run and stop every part of a gateway; `run()` returns the exit code."""

    def __init__(self, config_path: Path, *, usb_backend: Any | None = None,
                 on_ready: Callable[[Daemon], None] | None = None) -> None:
        self.config_path = Path(config_path)
        self.config: Config = config_module.load(self.config_path)
        self._usb_backend = usb_backend
        self._on_ready = on_ready
        self._signals: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()  # READY=1 sent: the monitor's warm-up waits for it
        self.heartbeats = Heartbeats()
        self.metrics = Metrics()
        self.events = EventBus()
        self.gateway: Gateway | None = None
        self._threads: list[threading.Thread] = []
        self._servers: list[uvicorn.Server] = []
        self.socket: local_socket.Bound | None = None
        self.api_port: int | None = None
        self.temperature_c: float | None = None
        self.reloaded = threading.Event()  # set after every reload request is handled (tests, status)
        self.last_reload = ""

    # --- signals: handlers only enqueue ---------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.put({signal.SIGHUP: "reload"}.get(signal.Signals(signum), "stop"))

    def request(self, command: str) -> None:
        """Ask the main loop to 'stop' or 'reload' (what the signal handlers do)."""
        self._signals.put(command)

    # --- lifecycle ------------------------------------------------------------------------

    def run(self) -> int:
        started = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, self._on_signal)
        logging.getLogger().setLevel(self.config.service.log_level.upper())
        notify(STATUS="starting")
        try:
            self._start()
        except (DxgateError, OSError) as exc:
            LOGGER.error("dxgate cannot start: %s", exc)
            notify(STATUS=f"failed to start: {exc}")
            self._shutdown()
            return 1
        LOGGER.info("dxgate ready in %.2f s (API on %s:%s)", time.monotonic() - started,
                    self.config.api.host, self.api_port)
        notify(READY=1, STATUS="ready")
        self._ready.set()
        self._audit(audit_msg.application(True, ae_title=self.config.site.ae_title, when=self._now()))
        if self._on_ready is not None:
            self._on_ready(self)
        while True:
            command = self._signals.get()
            if command == "reload":
                self.reload()
                continue
            break
        notify(STOPPING=1, STATUS="stopping")
        LOGGER.info("dxgate stopping")
        self._audit(audit_msg.application(False, ae_title=self.config.site.ae_title, when=self._now()))
        self._shutdown()
        LOGGER.info("dxgate stopped")
        return 0

    def _start(self) -> None:
        cfg = self.config
        Path(cfg.state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        au = cfg.audit
        self.audit = AuditTrail(cfg.path(cfg.spool.database), source_id=cfg.site.ae_title,
                                site=cfg.site.institution_name, collector=au.collector_host, port=au.collector_port,
                                transport=au.transport, ca_file=au.ca_file, cert_file=au.cert_file,
                                key_file=au.key_file, busy_timeout_s=cfg.spool.db_busy_timeout_s)
        self.audit.start()
        self.gateway = gw = Gateway(cfg, usb_backend=self._usb_backend, events=self.events)
        self._bind_metrics(gw)
        gw.start_forwarding()
        self.heartbeats.register("forwarder", cfg.service.heartbeat_s * 4 + gw.forwarder_idle_max_s())
        self._spawn("worklist", self._refresh_worklist)
        self.heartbeats.register("detector", cfg.service.heartbeat_s * 4)
        self._spawn("detector", self._watch_detector)
        self._spawn("handswitch", self._hand_switch_loop)
        if (offset_refresh := offset_refresh_for(gw)) is not None:  # calibration.offset_refresh_h (0: off)
            self._spawn("offset-refresh", lambda: offset_refresh.run(self._stop))
        self.users = UserStore(cfg.path(cfg.spool.database), lockout_attempts=cfg.api.lockout_attempts,
                               lockout_s=cfg.api.lockout_s, min_password_length=cfg.api.min_password_length,
                               busy_timeout_s=cfg.spool.db_busy_timeout_s)
        self._start_api(gw)
        self._watchdog = Watchdog(self.heartbeats)
        self._watchdog.start()
        self._spawn("monitor", self._monitor)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=f"dxgate-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def _start_api(self, gw: Gateway) -> None:
        api = self.config.api
        kwargs: dict[str, Any] = dict(metrics=self.metrics, events=self.events, heartbeats=self.heartbeats,
                                      on_auth=self._audit_auth, audit_query=self.audit.query,
                                      on_action=self._audit_action)
        ssl: dict[str, Any] = {}
        if api.tls_cert and api.tls_key:
            ssl = {"ssl_certfile": api.tls_cert, "ssl_keyfile": api.tls_key}
        editing: dict[str, Any] = dict(config_path=self.config_path, reload_config=self._reload_and_wait,
                                       on_config_change=self._audit_config_change)  # not over the socket
        server = self._serve(build_app(api, gw, self.users, **kwargs, **editing), "api",
                             uvicorn_args={"host": api.host, "port": api.port, **ssl},
                             where=f"{api.host}:{api.port}")
        self.api_port = server.servers[0].sockets[0].getsockname()[1]
        if api.socket:
            self.socket = local_socket.listen(self.config.path(api.socket), group=api.socket_group)
            self._serve(build_app(api, gw, self.users, local_role=api.socket_role, **kwargs), "api-socket",
                        sockets=[self.socket.sock], where=str(self.socket.path))

    def _serve(self, app: Any, name: str, *, where: str, uvicorn_args: dict[str, Any] | None = None,
               sockets: list[socket.socket] | None = None) -> uvicorn.Server:
        # An open event stream (a console) must not hold a SIGTERM up: 1 s for requests in flight.
        server_config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                       timeout_graceful_shutdown=1, **(uvicorn_args or {}))
        server = uvicorn.Server(server_config)  # off the main thread it leaves signals alone
        t = threading.Thread(target=server.run, kwargs={"sockets": sockets}, name=f"dxgate-{name}", daemon=True)
        t.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not t.is_alive() or time.monotonic() > deadline:
                raise DxgateError(f"the API could not listen on {where}")
            time.sleep(0.01)  # uvicorn offers no event for "listening"
        self._servers.append(server)
        self._threads.append(t)
        return server

    def _refresh_worklist(self) -> None:
        assert self.gateway is not None
        while not self._stop.is_set():
            try:
                view = self.gateway.worklist()
                self._audit_query(view.source == "ris", view.error or "")
            except DxgateError as exc:
                LOGGER.warning("worklist refresh failed: %s", exc)
                self._audit_query(False, str(exc))
            except Exception:  # the refresher must not die; the next round may succeed
                LOGGER.exception("worklist refresh failed unexpectedly")
            self._stop.wait(self.config.worklist.refresh_s)

    def _hand_switch_loop(self) -> None:
        """While the console has armed an exam's view, release one exposure at a time to the
        technologist's hand switch; every image is read, kept, built and spooled without anyone
        calling a function. A refusal before the dose disarms, so the console shows why."""
        assert self.gateway is not None
        exams = self.gateway.exams
        while not self._stop.is_set():
            withdrawn = exams.wait_armed(0.5)
            if withdrawn is None or self._stop.is_set():
                continue
            try:
                image = exams.expose_chosen(hand_switch=withdrawn)
            except ExposureRefused as exc:
                LOGGER.error("hand switch not released: %s", exc)
                exams.arm(False)
                self.events.publish("exam", state="refused", reason=str(exc))
            except FrameKeptError as exc:
                LOGGER.error("%s", exc)
                exams.arm(False)
                self.events.publish("exam", state="frame-kept", reason=str(exc))
            except DxgateError as exc:
                LOGGER.error("exposure failed: %s", exc)
                exams.arm(False)
                self.events.publish("exam", state="failed", reason=str(exc))
            except Exception:  # the loop must not die: the next arming may succeed
                LOGGER.exception("exposure failed unexpectedly")
                exams.arm(False)
            else:
                if image is not None:
                    self.events.publish("image", state="saved", sop_instance_uid=image.instance.sop_instance_uid)

    def _watch_detector(self) -> None:
        """The panel answers (its temperature, for metrics too): a panel that stops answering
        stops this beat, and so the watchdog."""
        assert self.gateway is not None
        gw = self.gateway
        while not self._stop.is_set():
            try:
                st = gw.detector.status()  # never raises: a silent or unplugged panel is a state
                self.temperature_c = st.temperature_c
                if st.state in ("not answering", "unplugged"):
                    LOGGER.error("detector %s: %s", st.state, st.error)
                else:
                    self.heartbeats.beat("detector")
                if st.ready:
                    gw.alarms.clear("detector-not-ready")
                elif not gw.alarms.active("detector-not-ready"):  # the console shows why exposures are refused
                    gw.alarms.raise_("detector-not-ready", f"detector {st.state}: {st.error or 'not ready'}")
            except Exception:  # the watcher must not die; its silence is the alarm
                LOGGER.exception("detector watch failed unexpectedly")
            self._stop.wait(self.config.service.heartbeat_s)

    def _monitor(self) -> None:
        """Beats for the forwarder from its own health (so a hung pass stops the watchdog); keeps
        the compiler's pages released."""
        assert self.gateway is not None
        gw = self.gateway
        while not self._ready.wait(0.1):  # after READY: the warm-up only spares the first frame the kernel's load
            if self._stop.is_set():
                return
        presentation.warm_up()
        gc.collect()
        gc.freeze()  # the start-up objects (modules, config, app) leave the collector: full passes stay short
        while True:
            release_compiler_pages()  # kernels compiled or loaded since (a new calibration) leave LLVM paged in
            if self._stop.wait(self.config.service.heartbeat_s):
                break
            if gw.forwarding_alive() and gw.forwarder_progressing():
                self.heartbeats.beat("forwarder")

    def reload(self) -> None:
        """Re-read the configuration; apply what can change while running; keep the rest."""
        try:
            new = config_module.load(self.config_path)
        except DxgateError as exc:
            self._audit(audit_msg.security_alert(audit_msg.SOFTWARE_CONFIGURATION, who=self.config.site.ae_title,
                                                 outcome=Outcome.MINOR_FAILURE, when=self._now(),
                                                 description=f"reload refused: {exc}"))
            LOGGER.error("reload refused, running configuration kept: %s", exc)
            notify(STATUS=f"reload refused: {exc}")
            self.last_reload = f"refused: {exc}"
            self.reloaded.set()
            return
        assert self.gateway is not None
        changed = [name for name in type(new).model_fields if getattr(new, name) != getattr(self.config, name)]
        restart = [n for n in changed if n not in config_module.RELOADABLE_SECTIONS]
        self.gateway.reconfigure(new)
        logging.getLogger().setLevel(new.service.log_level.upper())
        self.config = self.config.model_copy(update={"destinations": new.destinations, "worklist": new.worklist,
                                                     "service": new.service})
        if restart:
            LOGGER.warning("reload: changes to %s need a restart; they are not applied", ", ".join(restart))
        LOGGER.info("reload applied (%s)", ", ".join(n for n in changed if n not in restart) or "nothing changed")
        notify(STATUS="ready (reloaded)")
        self._audit(audit_msg.security_alert(audit_msg.SOFTWARE_CONFIGURATION, who=self.config.site.ae_title,
                                             outcome=Outcome.SUCCESS, when=self._now(),
                                             description="reload applied: " + (", ".join(changed) or "nothing")))
        self.last_reload = "applied: " + (", ".join(n for n in changed if n not in restart) or "nothing changed")
        self.reloaded.set()

    def _reload_and_wait(self, timeout_s: float = 30.0) -> str:
        """Request a reload as SIGHUP does and wait for the main loop's outcome (console edits)."""
        self.reloaded.clear()
        self.request("reload")
        return self.last_reload if self.reloaded.wait(timeout_s) else "requested; not confirmed yet"

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.config.service.stop_timeout_s
        self._stop.set()
        if self.gateway is not None:
            self.gateway.exams.arm(False)  # withdraw a waiting release; an exposure under way finishes
        for server in self._servers:
            server.should_exit = True
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        if getattr(self, "_watchdog", None) is not None:
            self._watchdog.stop()
        if self.gateway is not None:
            self.gateway.close(timeout_s=max(1.0, deadline - time.monotonic()))
        if getattr(self, "users", None) is not None:
            self.users.close()
        if getattr(self, "audit", None) is not None:
            self.audit.close(timeout_s=max(1.0, deadline - time.monotonic()))
        if self.socket is not None:
            self.socket.remove()

    # --- metrics --------------------------------------------------------------------------

    def _bind_metrics(self, gw: Gateway) -> None:
        lv = self.metrics.levels
        lv.queue = gw.spool.counts_by_destination
        lv.disk_free_bytes = gw.free_bytes
        lv.detector_temperature_c = lambda: self.temperature_c
        lv.calibration_age_s = gw.calibration_age_s
        lv.heartbeat_ages_s = lambda: self.heartbeats.ages()
        lv.alarms = gw.alarm_counts
        # Readout -> image is one synchronous hand-off per exposure (the next release waits until
        # the image is saved, so its preflight sees the storage it will use); what can wait
        # between stages is durable and counted here: frames kept but not yet imaged, frames held
        # in memory because their raw record could not be written. The spool's backlog per
        # destination and state is dxgate_queue_deliveries.
        lv.stage_queues = lambda: {"kept_frames": gw.raw_store.count(),
                                   "frames_in_memory": gw.exams.frames_held_in_memory}
        gw.forwarder.on_result = self._on_send
        lv.commitments = gw.spool.commitments.counts
        gw.forwarder.committer.on_event = self.metrics.record_commitment

    # --- audit ----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _audit(self, event: audit_msg.AuditEvent, user: str = "") -> None:
        """Record an audit event; a failure to record is an error in the log, never a crash."""
        try:
            self.audit.record(event, user)
        except Exception:
            LOGGER.exception("audit record of %s could not be written", event.name)

    def _audit_auth(self, kind: str, user: str, outcome: str, address: str) -> None:
        result = {"ok": Outcome.SUCCESS, "refused": Outcome.MINOR_FAILURE}.get(outcome, Outcome.SERIOUS_FAILURE)
        self._audit(audit_msg.authentication(kind == "login", user=user, outcome=result, address=address,
                                             when=self._now(), description="" if outcome == "ok" else outcome), user)
        if outcome == "locked":
            self._audit(audit_msg.security_alert(audit_msg.USER_SECURITY_ATTRIBUTES_CHANGED, who=user,
                                                 outcome=Outcome.SERIOUS_FAILURE, when=self._now(), address=address,
                                                 description="log-in refused: user locked out"), user)

    def _audit_action(self, user: str, action: str, status: int) -> None:
        outcome = Outcome.SUCCESS if status < 400 else Outcome.MINOR_FAILURE if status < 500 else \
            Outcome.SERIOUS_FAILURE
        self._audit(audit_msg.security_alert(audit_msg.USE_OF_RESTRICTED_FUNCTION, who=user, outcome=outcome,
                                             when=self._now(), description=f"{action}: {status}"), user)

    def _audit_config_change(self, user: str, done: bool, description: str) -> None:
        self._audit(audit_msg.security_alert(audit_msg.SOFTWARE_CONFIGURATION, who=user,
                                             outcome=Outcome.SUCCESS if done else Outcome.MINOR_FAILURE,
                                             when=self._now(), description=description[:500]), user)

    def _audit_query(self, ok: bool, error: str) -> None:
        wl = self.config.worklist
        self._audit(audit_msg.worklist_query(ae_title=self.config.site.ae_title, ris=wl.called_ae,
                                             address=wl.host, when=self._now(),
                                             outcome=Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE,
                                             description=error[:200]))

    def _on_send(self, result: DeliveryResult) -> None:
        self.metrics.record_send(result)
        if result.outcome != Delivery.SENT:
            return
        assert self.gateway is not None
        inst = self.gateway.spool.instance(result.uid)
        dest = next((d for d in self.config.destinations if d.name == result.destination), None)
        self._audit(audit_msg.instances_transferred(
            ae_title=self.config.site.ae_title, destination=dest.called_ae if dest else result.destination,
            address=dest.host if dest else "", study_uid=getattr(inst, "study_instance_uid", ""), patient_id="",
            outcome=Outcome.SUCCESS, when=self._now()))
