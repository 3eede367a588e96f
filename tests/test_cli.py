"""The `dxgate` command line, as an installer or field engineer uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.config import Config, load


def dxgate(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "dxgate"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)


def test_default_config_is_documented_and_loads_back(tmp_path: Path) -> None:
    out = dxgate("default-config")
    assert out.returncode == 0
    path = tmp_path / "dxgate.toml"
    path.write_text(out.stdout)
    assert load(path) == Config()
    assert "# UID root for generated UIDs" in out.stdout


def test_check_config_names_the_wrong_key_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "dxgate.toml"
    path.write_text('[[destinations]]\nname = "pacs"\nport = 104\ncalled_ae = "PACS"\nhsot = "10.0.0.5"\n')
    out = dxgate("check-config", str(path))
    assert out.returncode == 2
    assert f"dxgate: {path}: destinations[0]: unknown key(s) hsot" in out.stderr
    assert out.stdout == ""


def test_check_config_prints_the_resolved_configuration(tmp_path: Path) -> None:
    path = tmp_path / "dxgate.toml"
    path.write_text('state_dir = "/srv/dxgate"\n[detector]\nmode = "1x1"\n')
    out = dxgate("check-config", str(path))
    assert out.returncode == 0, out.stderr
    resolved = tmp_path / "resolved.toml"
    resolved.write_text(out.stdout)
    cfg = load(resolved)
    assert cfg.state_dir == "/srv/dxgate" and cfg.detector.mode == "1x1"
    assert cfg.destinations == Config().destinations  # defaults filled in, visibly
