"""Typed configuration: defaults in one place, every mistake named."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Config, DestinationConfig, from_dict, load, to_toml
from gateway.errors import ConfigError


def test_defaults_render_and_read_back_identically(tmp_path: Path) -> None:
    cfg = Config(state_dir=str(tmp_path), destinations=(DestinationConfig(name="a"), DestinationConfig(name="b")))
    path = tmp_path / "dxgate.toml"
    path.write_text(to_toml(cfg))
    assert load(path) == cfg


def test_every_key_is_documented() -> None:
    text = to_toml(Config())
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if " = " in line and not line.startswith("#"):
            assert lines[i - 1].startswith("# ") and len(lines[i - 1]) > 4, f"undocumented key: {line}"


@pytest.mark.parametrize(("raw", "message"), [
    ({"detector": {"mdoe": "2x2"}}, "config: detector: unknown key(s) mdoe"),
    ({"detector": {"vendor_id": "0x1209"}}, "config: detector.vendor_id: expected int, got str"),
    ({"destinations": [{"port": 70000}]}, "config: destinations[0].port: 70000 is outside [1, 65535]"),
    ({"exposure": {"view_position": "XX"}}, "config: exposure.view_position: 'XX' is not one of"),
    ({"site": "DXGATE"}, "config: site: expected a table"),
    ({"calibration": {"dark_frames": True}}, "config: calibration.dark_frames: expected int, got bool"),
])
def test_mistakes_are_named(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(raw)
    assert message in str(err.value)


def test_broken_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[detector\nmode = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load(bad)


def test_relative_paths_live_under_state_dir(tmp_path: Path) -> None:
    cfg = Config(state_dir=str(tmp_path))
    assert cfg.path(cfg.spool.directory) == tmp_path / "spool"
    assert cfg.path("/abs/x") == Path("/abs/x")
