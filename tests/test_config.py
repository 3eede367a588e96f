"""Typed configuration: defaults in one place, every mistake named."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import Config, DestinationConfig, check_state_dir, from_dict, load, to_toml
from gateway.errors import ConfigError
from tests.peers import in_ci


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
    ({"detector": {"mdoe": "2x2"}}, "config: detector.mdoe: unknown key"),
    ({"detector": {"vendor_id": "0x1209"}}, "config: detector.vendor_id: input should be a valid integer, got str"),
    ({"destinations": [{"port": 70000}]}, "config: destinations[0].port: 70000 is out of range"),
    ({"exposure": {"view_position": "XX"}}, "config: exposure.view_position: 'XX': input should be 'AP', 'PA'"),
    ({"exposure": {"view_position": "LAT"}}, "config: exposure.view_position: 'LAT': input should be"),
    ({"site": "DXGATE"}, "config: site: input should be a valid dictionary"),
    ({"calibration": {"dark_frames": True}}, "config: calibration.dark_frames: input should be a valid integer"),
    # numbers that are not numbers: every one of these was accepted once
    ({"detector": {"frame_timeout_s": float("nan")}}, "config: detector.frame_timeout_s: nan is not a finite number"),
    ({"exposure": {"target_ei": float("inf")}}, "config: exposure.target_ei: inf is not a finite number"),
    ({"calibration": {"max_age_days": float("nan")}}, "config: calibration.max_age_days: nan is not a finite"),
    ({"exposure": {"kvp": float("nan")}}, "config: exposure.kvp: nan is not a finite number"),
    ({"exposure": {"kvp": "80"}}, "config: exposure.kvp: expected a number, got str '80'"),
    # AE titles pynetdicom cannot send
    ({"destinations": [{"called_ae": "A" * 17}]}, "destinations[0].called_ae: AE title 'AAAAAAAAAAAAAAAAA' is 17"),
    ({"destinations": [{"called_ae": "PA\\CS"}]}, "destinations[0].called_ae: AE title 'PA\\\\CS' holds a backslash"),
    ({"destinations": [{"called_ae": "  "}]}, "destinations[0].called_ae: an AE title cannot be empty"),
    ({"site": {"ae_title": "DX\nGATE"}}, "site.ae_title: AE title 'DX\\nGATE' holds a backslash, a control"),
    ({"worklist": {"called_ae": "X" * 20}}, "worklist.called_ae: AE title"),
    # destinations
    ({"destinations": []}, "config: destinations: tuple should have at least 1 item"),
    ({"destinations": [{"name": "a"}, {"name": "a"}]}, "destination names must be unique: a appear"),
    ({"destinations": [{"name": ""}]}, "destinations[0].name: must not be empty"),
    ({"destinations": [{"host": ""}]}, "destinations[0].host: must not be empty"),
    # UIDs and anatomy
    ({"site": {"uid_root": "1.02.3"}}, "site.uid_root: UID root '1.02.3' is not a valid UID prefix"),
    ({"site": {"uid_root": "1." + "2" * 50}}, "leaves 11 digits for the unique suffix; at least 20"),
    ({"exposure": {"body_part": "HAND"}}, "exposure: body part HAND is paired: laterality R, L or B must be given"),
    ({"exposure": {"body_part": "CHEST", "laterality": "L"}}, "body part CHEST is unpaired: laterality must be U"),
    ({"exposure": {"body_part": "TAIL"}}, "exposure.body_part: body part 'TAIL' is not known to dxgate (known: CHEST"),
    ({"api": {"host": "0.0.0.0"}}, "api: the API listens on 0.0.0.0, beyond loopback: configure tls_cert"),
    # names, hosts and paths
    ({"detector": {"driver": "os:system"}}, "detector.driver: 'os:system' is not a registered name"),
    ({"detector": {"usb_backend": "a.b:c"}}, "detector.usb_backend: 'a.b:c' is not a registered name"),
    ({"detector": {"backend_options": {"x": [1.0, float("nan")]}}}, "nan is not a finite number (at x[1])"),
    ({"destinations": [{"host": "pacs .example"}]}, "destinations[0].host: host 'pacs .example' holds a blank"),
    ({"audit": {"collector_host": "a\tb"}}, "audit.collector_host: host"),
    ({"spool": {"directory": "sp\nool"}}, "spool.directory: 'sp\\nool' holds a control character"),
    ({"state_dir": ""}, "state_dir: must not be empty"),
    ({"destinations": [{"name": "a\\b"}]}, "destinations[0].name:"),
    ({"exposure": {"body_part": "chest"}}, "write the defined term 'CHEST'"),
    # worklist matching keys
    ({"worklist": {"modality": "dx"}}, "worklist.modality: 'dx' is not a DICOM code string"),
    ({"worklist": {"date_range": "week"}}, "worklist.date_range: 'week': input should be 'today' or 'none'"),
    ({"worklist": {"date_range": "none", "days_ahead": 2}}, "worklist: days_before and days_ahead apply to "
                                                            "date_range 'today'"),
    ({"worklist": {"days_before": 31}}, "worklist.days_before: 31 is out of range"),
    ({"worklist": {"match_station_ae": "yes"}}, "worklist.match_station_ae: input should be a valid boolean"),
    ({"worklist": {"station_name": "ROOM\\1"}}, "worklist.station_name: 'ROOM\\\\1' holds a backslash"),
    ({"worklist": {"station_name": "X" * 17}}, "worklist.station_name: String should have at most 16 characters"),
])
def test_mistakes_are_named(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(raw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)  # one line, whatever the mistake


def test_a_nan_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dxgate.toml"
    path.write_text("[detector]\nframe_timeout_s = nan\n[exposure]\nkvp = inf\n")
    with pytest.raises(ConfigError, match=r"detector.frame_timeout_s: nan is not a finite number; "
                                          r"exposure.kvp: inf is not a finite number"):
        load(path)


def test_a_state_directory_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"state_dir: .*file is not a directory"):
        check_state_dir(Config(state_dir=str(tmp_path / "file" / "state")))
    check_state_dir(Config(state_dir=str(tmp_path / "new" / "state")))  # creatable: fine
    assert not (tmp_path / "new").exists()  # and checking created nothing


def test_a_read_only_state_directory_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True)
    if done.returncode != 0:
        if in_ci():
            pytest.fail(f"cannot mount a read-only tmpfs: {done.stderr!r}")
        pytest.skip("needs root to mount a read-only tmpfs")
    try:
        with pytest.raises(ConfigError, match="state_dir: cannot write in .*ro: Read-only file system"):
            check_state_dir(Config(state_dir=str(ro)))
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["state_dir", "site", "detector", "exposure", "spool", "destinations",
                                        "worklist", "api", "junk"]),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                                    lambda inner: st.lists(inner, max_size=3)
                                    | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=8),
                       max_size=4))
def test_any_parsed_document_is_a_config_or_one_config_error(raw: dict) -> None:
    try:
        cfg = from_dict(raw)
    except ConfigError as exc:
        assert str(exc).startswith("config: ") and "\n" not in str(exc)
    else:  # what was accepted renders and reads back as the same configuration
        assert from_dict(tomllib.loads(to_toml(cfg))) == cfg


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


def test_worklist_matching_keys_default_to_what_a_ris_leaving_the_station_ae_empty_answers() -> None:
    """Many RIS leave Scheduled Station AE Title empty, and an empty value never matches a key:
    by default the query matches modality DX and today's date, not the station AE."""
    wl = Config().worklist
    assert (wl.match_station_ae, wl.modality, wl.station_name, wl.date_range, wl.days_before, wl.days_ahead) == (
        False, "DX", "", "today", 0, 0)
    keys = from_dict({"worklist": {"match_station_ae": True, "modality": "", "station_name": "DXROOM*",
                                   "days_before": 1, "days_ahead": 2}}).worklist
    assert (keys.match_station_ae, keys.modality, keys.station_name, keys.days_before, keys.days_ahead) == (
        True, "", "DXROOM*", 1, 2)
    assert from_dict({"worklist": {"date_range": "none"}}).worklist.date_range == "none"
