"""The simulator process's control socket: the hand switch, ground truth and fault injection.

JSON lines over a Unix socket, one request and one reply per line (`{"op": "press"}` ->
`{"ok": true, "fired": true}`). `SimControl` is the client tests and the demo use.

Room: press (the hand switch), status, pulses, place (scene: open, chest, hand, qc),
temperature (celsius), collimate, truth (mode: the scene's known values and the collimated
field in that mode's pixels, hw_sim.phantoms.scene_truth).

collimate sets the collimated field: `{"op": "collimate", "field_mm": [left, top, right, bottom]}`
in mm on the panel (origin at the top-left pixel's corner, x along columns, y along rows), or
`{"op": "collimate", "fractions": [left, top, right, bottom]}` of the panel's side, or
`{"op": "collimate"}` to open it to the whole panel. Outside the field the panel sees scatter
only (hw_sim.collimation.SCATTER_FRACTION of the air kerma). Replies `{"field_mm": [...] | null}`.

Faults: panel — crc_errors, truncate, skip_frame_number, stall_payload, halt_bulk,
unplug / plug, unplug_mid_transfer (replug_after_s), hang (hung), temperature (over-temperature),
battery (percent, link_quality); generator — interlock / clear_interlock, garble_generator,
readback_next, tube_heat (percent), anode_fault, generator_silent (silent), line_noise (text).
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hw_sim.collimation import Field
from hw_sim.room import SimRoom

LOGGER = logging.getLogger(__name__)


class ControlServer:
    """Answers control requests for one SimRoom (its generator must be started)."""

    def __init__(self, room: SimRoom, path: str | Path, *, on_unplug: Callable[[bool], None] | None = None) -> None:
        self.room = room
        self.path = str(path)
        self._on_unplug = on_unplug
        Path(self.path).unlink(missing_ok=True)
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    try:
                        request = json.loads(line)
                        reply = {"ok": True, **outer.handle(str(request.get("op")), request)}
                    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
                        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                    self.wfile.write(json.dumps(reply).encode() + b"\n")
                    self.wfile.flush()

        self._server = socketserver.ThreadingUnixStreamServer(self.path, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="sim-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        Path(self.path).unlink(missing_ok=True)

    def handle(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        room, gen, panel = self.room, self.room.generator, self.room.panel
        if op == "press":
            return {"fired": gen.press()}
        if op == "status":
            return {"exposures": gen.exposures, "presses_refused": gen.presses_refused,
                    "generator_state": gen.state, "pulses": len(room.pulses), "pulses_lost": panel.pulses_lost,
                    "frames_read_out": panel.frames_read_out, "transmissions": panel.transmissions,
                    "held_frame": panel.held_frame, "frames_held": panel.frames_held, "present": panel.present,
                    "temperature_c": room.temperature_c, "scene": room.scene,
                    "field_mm": None if room.field is None else room.field.as_list()}
        if op == "pulses":
            return {"pulses": [list(p) for p in room.pulses]}
        if op == "place":
            room.place(str(req["scene"]))
            return {}
        if op == "collimate":
            return {"field_mm": self._collimate(req)}
        if op == "truth":
            return {"truth": room.ground_truth(str(req.get("mode", panel.mode)))}
        if op == "temperature":
            room.set_temperature(float(req["celsius"]))
            return {}
        if op == "interlock":
            gen.interlock(str(req.get("reason", "door open")))
            return {}
        if op == "clear_interlock":
            gen.clear_interlock()
            return {}
        if op == "garble_generator":
            gen.garble_next_reply(int(req.get("n", 1)))
            return {}
        if op == "readback_next":
            gen.readback_next(str(req["fields"]))
            return {}
        if op == "crc_errors":
            room.inject_crc_errors(int(req.get("n", 1)))
            return {}
        if op == "truncate":
            room.truncate_frames(int(req.get("n", 1)), float(req.get("keep", 0.5)))
            return {}
        if op == "skip_frame_number":
            room.skip_frame_number(int(req.get("n", 1)))
            return {}
        if op == "tube_heat":
            gen.set_tube_heat(float(req["percent"]))
            return {}
        if op == "anode_fault":
            gen.anode_fault(int(req.get("n", 1)))
            return {}
        if op == "generator_silent":
            gen.go_silent(bool(req.get("silent", True)))
            return {}
        if op == "line_noise":
            gen.noise_before_next_reply(str(req.get("text", "~~ line noise ~~")).encode("latin-1") + b"\r\n")
            return {}
        if op == "unplug_mid_transfer":
            after = req.get("replug_after_s")
            panel.unplug_mid_transfer(int(req.get("n", 1)), None if after is None else float(after))
            return {}
        if op == "stall_payload":
            panel.stall_payload(int(req.get("n", 1)))
            return {}
        if op == "halt_bulk":
            panel.halt_bulk(int(req.get("n", 1)))
            return {}
        if op == "hang":
            panel.hang(bool(req.get("hung", True)))
            return {}
        if op == "battery":
            battery, link = req.get("percent"), req.get("link_quality")
            panel.set_battery(None if battery is None else int(battery), None if link is None else int(link))
            return {}
        if op in ("unplug", "plug"):
            if self._on_unplug is None:
                raise RuntimeError("this simulator cannot unplug its panel")
            self._on_unplug(op == "unplug")
            return {}
        raise ValueError(f"unknown control operation {op[:40]!r}")

    def _collimate(self, req: dict[str, Any]) -> list[float] | None:
        if req.get("field_mm") is not None:
            left, top, right, bottom = (float(v) for v in req["field_mm"])
            field: Field | None = Field(left, top, right, bottom)
        elif req.get("fractions") is not None:
            left, top, right, bottom = (float(v) for v in req["fractions"])
            field = Field.from_fractions(left, top, right, bottom, self.room.panel_mm)
        else:
            field = None
        self.room.collimate(field)
        return None if field is None else field.as_list()


class SimControl:
    """Client of a ControlServer (one connection, one request at a time)."""

    def __init__(self, path: str | Path, timeout_s: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        self._sock.connect(str(path))
        self._file = self._sock.makefile("rwb")
        self._lock = threading.Lock()

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            self._file.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            self._file.flush()
            line = self._file.readline()
        if not line:
            raise ConnectionError("the simulator closed its control socket")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"simulator refused {op}: {reply.get('error')}")
        return dict(reply)

    def press(self) -> bool:
        """The technologist presses the hand switch; whether X-rays were delivered."""
        return bool(self.call("press")["fired"])

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> SimControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
