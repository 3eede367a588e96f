"""The systemd units as systemd itself reads them: verify, the security exposure score, sysusers."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers import in_ci

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "dxgate.service"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        if in_ci():
            pytest.fail(f"{name} is not installed", pytrace=False)
        pytest.skip(f"{name} is not installed")
    return found


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointed at this venv's dxgate (verify checks it exists)."""
    text = UNIT.read_text().replace("/opt/dxgate/venv/bin/dxgate", str(Path(sys.executable).parent / "dxgate"))
    path = tmp_path / "dxgate.service"
    path.write_text(text)
    return path


def test_the_unit_verifies_and_is_a_watchdogged_notify_service(unit: Path) -> None:
    out = subprocess.run([_tool("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "StateDirectory=dxgate",
                 "ExecReload=/bin/kill -HUP $MAINPID", "CapabilityBoundingSet=\n", "NoNewPrivileges=yes"):
        assert line in text, line


def test_the_security_exposure_score_is_at_most_2(unit: Path) -> None:
    out = subprocess.run([_tool("systemd-analyze"), "security", "--offline=true", str(unit)], capture_output=True,
                         text=True, timeout=60)
    score = re.search(r"Overall exposure level for dxgate\.service: ([0-9.]+)", out.stdout)
    assert score is not None, out.stdout[-500:] + out.stderr
    assert float(score.group(1)) <= 2.0, out.stdout[-2000:]


def test_sysusers_then_tmpfiles_make_an_owner_only_state_directory(tmp_path: Path) -> None:
    """Into an empty root as a fresh Debian box would run them at install."""
    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("passwd", "shadow", "gshadow"):
        (etc / name).touch()
    (etc / "group").write_text("dialout:x:20:\nplugdev:x:46:\n")
    out = subprocess.run([_tool("systemd-sysusers"), f"--root={tmp_path}", str(ROOT / "systemd" / "dxgate.sysusers")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (etc / "passwd").read_text().startswith("dxgate:x:")
    assert "dialout:x:20:dxgate" in (etc / "group").read_text()
    out = subprocess.run([_tool("systemd-tmpfiles"), f"--root={tmp_path}", "--create",
                          str(ROOT / "systemd" / "dxgate.tmpfiles")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    state = tmp_path / "var/lib/dxgate"
    assert state.is_dir() and state.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "etc/dxgate").stat().st_mode & 0o777 == 0o750
