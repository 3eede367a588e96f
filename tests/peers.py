"""The real DICOM peers the tests talk to: Orthanc and DCMTK from Debian, dicom3tools.

Each peer is started on loopback with an ephemeral port, waited for with a deadline (not a
fixed sleep), and stopped by PID. With CI=true a missing peer fails the test instead of
skipping it: a CI that silently skipped the real peers would prove nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_PLUGINS = "/usr/share/orthanc/plugins"
STORESCP = "/usr/bin/storescp"
WLMSCPFS = "/usr/bin/wlmscpfs"
RSYSLOGD = "/usr/sbin/rsyslogd"
START_TIMEOUT_S = 30.0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(path_or_name: str) -> str:
    """The executable's path, or fail (CI) / skip (elsewhere) naming what is missing."""
    found = path_or_name if os.access(path_or_name, os.X_OK) else shutil.which(path_or_name)
    if not found:
        msg = f"real peer {path_or_name} is not installed (run `make test`, which installs it)"
        if in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    """Return once something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode} before listening:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # a process starting up offers no event to wait on
    raise RuntimeError(f"peer did not listen on port {port} within {timeout_s}s:\n{_tail(log)}")


def _tail(log: Path, n: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _start(cmd: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TCP_NODELAY="1")
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


@dataclass
class Orthanc:
    """Orthanc as RIS (worklist plugin) and PACS, with its REST API on loopback."""

    root: Path
    aet: str = "ORTHANC"
    dicom_port: int = 0
    http_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    worklist_dir: Path = field(init=False)
    modalities: dict[str, list[Any]] = field(default_factory=dict)
    extra_config: dict[str, Any] = field(default_factory=dict)  # more settings, e.g. DicomTlsEnabled

    def __post_init__(self) -> None:
        self.worklist_dir = self.root / "worklists"

    def start(self) -> Orthanc:
        require(ORTHANC)
        self.worklist_dir.mkdir(parents=True, exist_ok=True)
        self.dicom_port, self.http_port = free_port(), free_port()
        config = {
            "Name": "dxgate-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowFindWorklist": True,
            "DicomCheckCalledAet": False,
            "UnknownSopClassAccepted": False,
            "MaximumPduLength": 131072,
            "DicomModalities": self.modalities,
            "Plugins": [ORTHANC_PLUGINS],
            "Worklists": {"Enable": True, "Database": str(self.worklist_dir)},
            "StableAge": 1,
            "DefaultEncoding": "Utf8",
            **self.extra_config,
        }
        cfg = self.root / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=2))
        log = self.root / "orthanc.log"
        self.proc = _start([ORTHANC, "--verbose", str(cfg)], log, self.root)
        wait_for_port(self.http_port, self.proc, log)
        wait_for_port(self.dicom_port, self.proc, log)
        return self

    def rest(self, path: str, data: bytes | None = None, method: str | None = None) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
        ctype = resp.headers.get("Content-Type", "")
        return json.loads(body) if "json" in ctype else body

    def instances(self) -> list[str]:
        return list(self.rest("/instances"))

    def instance_file(self, orthanc_id: str) -> bytes:
        return bytes(self.rest(f"/instances/{orthanc_id}/file"))

    def find_instance(self, sop_instance_uid: str) -> str | None:
        found = self.rest("/tools/lookup", data=sop_instance_uid.encode(), method="POST")
        ids = [f["ID"] for f in found if f.get("Type") == "Instance"]
        return ids[0] if ids else None

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@dataclass
class StoreSCP:
    """DCMTK storescp, one file per received instance in out_dir."""

    root: Path
    aet: str = "STORESCP"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    out_dir: Path = field(init=False)
    # (key, certificate, CA or None): DICOM TLS; with a CA, a client certificate it signed is required
    tls: tuple[Path, Path, Path | None] | None = None
    args: tuple[str, ...] = ()  # more storescp options, e.g. ("+xa",) to accept compressed syntaxes

    def __post_init__(self) -> None:
        self.out_dir = self.root / "received"

    def start(self) -> StoreSCP:
        exe = require(STORESCP)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log = self.root / "storescp.log"
        tls: list[str] = []
        if self.tls is not None:
            key, cert, ca = self.tls
            tls = ["+tls", str(key), str(cert), "-pw"]
            tls += ["+cf", str(ca), "--require-peer-cert"] if ca is not None else ["--ignore-peer-cert"]
        self.proc = _start([exe, "--verbose", "--aetitle", self.aet, "--output-directory", str(self.out_dir),
                            "--max-pdu", "131072", "--filename-extension", ".dcm", *tls, *self.args, str(self.port)],
                           log, self.root)
        wait_for_port(self.port, self.proc, log)
        return self

    def files(self) -> list[Path]:
        return sorted(self.out_dir.glob("*.dcm"))

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@dataclass
class WlmSCP:
    """DCMTK wlmscpfs serving the .wl files in worklist_dir (its AE title's folder)."""

    root: Path
    aet: str = "WLMSCP"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    worklist_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.worklist_dir = self.root / "wlm" / self.aet

    def start(self) -> WlmSCP:
        exe = require(WLMSCPFS)
        self.worklist_dir.mkdir(parents=True, exist_ok=True)
        (self.worklist_dir / "lockfile").touch()
        self.port = free_port()
        log = self.root / "wlmscpfs.log"
        self.proc = _start([exe, "--verbose", "--keep-char-set", "--data-files-path", str(self.worklist_dir.parent),
                            "--max-pdu", "131072", str(self.port)], log, self.root)
        wait_for_port(self.port, self.proc, log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def dciodvfy_tools() -> list[str]:
    """Every dciodvfy available: the PyPI build in this venv (or on PATH) and Debian's (they differ in age)."""
    tools = []
    for candidate in (str(Path(sys.executable).parent / "dciodvfy"), shutil.which("dciodvfy"), "/usr/bin/dciodvfy"):
        if candidate and os.access(candidate, os.X_OK) and os.path.realpath(candidate) not in {
                os.path.realpath(t) for t in tools}:
            tools.append(candidate)
    if not tools:
        require("dciodvfy")
    return tools


def dciodvfy_errors(path: Path | str) -> list[str]:
    """The error lines every available dciodvfy reports for a DICOM file (warnings excluded).

    A file the tool could not read is an error, never "no errors": an Abort line, or a
    non-zero exit without any report line, fails the check."""
    errors: list[str] = []
    for tool in dciodvfy_tools():
        out = subprocess.run([tool, "-new", str(path)], capture_output=True, text=True, timeout=60)
        lines = (out.stdout + out.stderr).splitlines()
        errors += [f"{tool}: {line}" for line in lines if line.startswith(("Error", "Abort"))]
        reported = any(line.startswith(("Error", "Warning", "Abort")) for line in lines)
        if out.returncode != 0 and not reported:
            errors.append(f"{tool}: exit code {out.returncode} with no report: {' '.join(lines)[:200]!r}")
        if out.returncode == 0 and not lines and not Path(path).is_file():
            errors.append(f"{tool}: {path} is not a file")
    return errors


@dataclass
class Rsyslog:
    """Debian's rsyslogd as the audit record repository: TCP and UDP on loopback, every message
    written raw (as received) to `out`."""

    root: Path
    tcp_port: int = 0
    udp_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    out: Path = field(init=False)
    tls: tuple[Path, Path, Path] | None = None  # (CA, certificate, key): TCP becomes RFC 5425 TLS (gtls)

    def __post_init__(self) -> None:
        self.out = self.root / "received.log"

    def start(self, tcp_port: int = 0) -> Rsyslog:
        exe = require(RSYSLOGD)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tcp_port, self.udp_port = tcp_port or free_port(), free_port()
        conf = self.root / "rsyslog.conf"
        tls_global, tcp_driver = "", ""
        if self.tls is not None:
            ca, cert, key = self.tls
            tls_global = (f' DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{ca}"'
                          f' DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}"')
            tcp_driver = ' StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.Authmode="anon"'
        conf.write_text(f'''global(workDirectory="{self.root}" maxMessageSize="64k"{tls_global})
module(load="imtcp"{tcp_driver})
module(load="imudp")
input(type="imtcp" port="{self.tcp_port}" address="127.0.0.1")
input(type="imudp" port="{self.udp_port}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\\n")
*.* action(type="omfile" file="{self.out}" template="raw")
''')
        log = self.root / "rsyslogd.log"
        self.proc = _start([exe, "-n", "-f", str(conf), "-i", str(self.root / "rsyslogd.pid")], log, self.root)
        wait_for_port(self.tcp_port, self.proc, log)
        return self

    def messages(self) -> list[str]:
        return self.out.read_text(encoding="utf-8").splitlines() if self.out.exists() else []

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
