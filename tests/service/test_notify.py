"""The notify protocol against a fake NOTIFY_SOCKET: READY arrives; pings stop when a stage is stuck."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.heartbeat import Heartbeats
from gateway.service.notify import Watchdog, notify, watchdog_interval_s


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_ready_and_status_arrive(systemd: socket.socket) -> None:
    assert notify(READY=1, STATUS="ready")
    assert receive(systemd) == {"READY": "1", "STATUS": "ready"}


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"dxgate-test-{id(sock)}"
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert notify(STOPPING=1)
        assert receive(sock) == {"STOPPING": "1"}
    finally:
        sock.close()


def test_no_socket_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify(READY=1) is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # another process's watchdog
    assert watchdog_interval_s() is None


def test_pings_flow_while_fresh_and_stop_when_a_stage_is_stuck(systemd: socket.socket) -> None:
    now = [0.0]
    beats = Heartbeats(clock=lambda: now[0])
    beats.register("forwarder", 10.0)
    beats.register("handswitch", 10.0)
    dog = Watchdog(beats, interval_s=0.02)
    dog.start()
    try:
        assert receive(systemd) == {"WATCHDOG": "1"}  # fresh: pinging
        now[0] = 8.0
        beats.beat("forwarder")
        now[0] = 12.0  # the hand-switch loop has been silent for 12 s > 10 s
        msg, deadline = receive(systemd), time.monotonic() + 5
        while msg.get("WATCHDOG") == "1" and time.monotonic() < deadline:  # pings sent before the clock moved
            msg = receive(systemd)
        assert msg == {"STATUS": "stuck: handswitch"}
        systemd.settimeout(0.3)
        with pytest.raises(TimeoutError):  # and no ping follows while it stays stuck
            systemd.recv(4096)
        beats.beat("handswitch")
        systemd.settimeout(5)
        assert receive(systemd) == {"WATCHDOG": "1"}
    finally:
        dog.stop()
