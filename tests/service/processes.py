"""The simulator and `dxgate run` as subprocesses, as a hospital runs them (tests only)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hw_sim.control import SimControl

PASSWORD = "correct horse battery"
START_TIMEOUT_S = 30.0


def until(predicate: Callable[[], Any], timeout_s: float = 60.0, what: str = "condition") -> Any:
    """Poll the system's own view (an archive, the simulator) until it holds; bounded."""
    done = threading.Event()
    timer = threading.Timer(timeout_s, done.set)
    timer.start()
    try:
        while not done.is_set():
            value = predicate()
            if value:
                return value
            done.wait(0.05)
    finally:
        timer.cancel()
    raise AssertionError(f"{what} did not happen within {timeout_s:g} s")


def _read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """One line of the process's stdout within the bound (select: no sleep, no hang)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"no line from pid {proc.pid} within {timeout_s:g} s (so far {buf[:200]!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise RuntimeError(f"pid {proc.pid} ended (rc {proc.wait()}) before writing a line: {buf[:200]!r}")
        buf += chunk
    return buf


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"pid {proc.pid} did not stop within {timeout_s:g} s of signal {sig}") from None
    return int(proc.returncode)


@dataclass
class SimProcess:
    """`python -m hw_sim`: the room in its own process, reached by sockets and a pty."""

    root: Path
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    control: SimControl | None = None

    def start(self, *args: str) -> SimProcess:
        with open(self.root.parent / "sim.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "hw_sim", "--dir", str(self.root), *args],
                                         stdout=subprocess.PIPE, stderr=log)
        self.info = json.loads(_read_line(self.proc, START_TIMEOUT_S))
        self.control = SimControl(self.info["control_socket"])
        return self

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.control is not None
        return self.control.call(op, **fields)

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.proc is not None:
            stop_process(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


class NotifySocket:
    """A fake systemd NOTIFY_SOCKET: what the daemon tells systemd, as systemd would receive it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def wait_for(self, key: str, timeout_s: float = START_TIMEOUT_S) -> dict[str, str]:
        self.sock.settimeout(timeout_s)
        while True:
            msg = dict(line.split("=", 1) for line in self.sock.recv(4096).decode().splitlines() if "=" in line)
            if key in msg:
                return msg

    def close(self) -> None:
        self.sock.close()


@dataclass
class DaemonProcess:
    """`dxgate run --config PATH` with a fake NOTIFY_SOCKET; its stdout is the journal."""

    config: Path
    api_port: int
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    ready_s: float = 0.0

    def start(self) -> DaemonProcess:
        notify = NotifySocket(self.root / f"notify-{time.monotonic_ns()}.sock")
        env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
        t0 = time.monotonic()
        with open(self.root / "journal.log", "ab") as journal:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)],
                                         stdout=journal, stderr=subprocess.STDOUT, env=env)
        try:
            notify.wait_for("READY")
            self.ready_s = time.monotonic() - t0
        except TimeoutError:
            self.proc.kill()
            raise AssertionError(f"dxgate run never sent READY=1; journal:\n{self.journal()[-3000:]}") from None
        finally:
            notify.close()
        return self

    def journal(self) -> str:
        return (self.root / "journal.log").read_text(errors="replace")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=30)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        return stop_process(self.proc, timeout_s=timeout_s)


def add_user(config: Path, name: str, role: str) -> None:
    subprocess.run([sys.executable, "-m", "gateway.cli", "user", "--config", str(config), "add", name, "--role", role,
                    "--password-stdin"], input=PASSWORD.encode() + b"\n", check=True, capture_output=True)


def login(c: httpx.Client, name: str) -> dict[str, str]:
    r = c.post("/api/login", json={"user": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def calibrate(c: httpx.Client, csrf: dict[str, str], sim: SimProcess) -> None:
    """An engineer's calibration through the API, the open field placed for it and the chest
    scene put back after; returns once the set is in use."""
    sim.call("place", scene="open")
    assert c.post("/api/calibration", headers=csrf).status_code == 200
    until(lambda: c.get("/api/calibration").json()["state"] != "running", what="calibration")
    assert c.get("/api/calibration").json()["state"] == "done"
    sim.call("place", scene="chest")
