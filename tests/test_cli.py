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
    assert out.stderr == f"dxgate: {path}: destinations[0].hsot: unknown key\n"
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


def _one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("dxgate: ")
    for needle in needles:
        assert needle in out.stderr, out.stderr


def test_user_mistakes_get_one_line_and_exit_2(tmp_path: Path) -> None:
    _one_line_error(dxgate("check-config", str(tmp_path)), str(tmp_path), "is a directory")
    _one_line_error(dxgate("check-config", str(tmp_path / "nope.toml")), "config file not found")
    home_file = tmp_path / "home"
    home_file.write_text("x")
    _one_line_error(dxgate("demo", "--home", str(home_file)), "is not a directory")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    _one_line_error(dxgate("check-config", str(tmp_path / "bin.toml")), "not UTF-8")
    cfg = tmp_path / "dxgate.toml"
    cfg.write_text(f'state_dir = "{home_file}/state"\n')
    _one_line_error(dxgate("check-config", str(cfg)), "state_dir:", "is not a directory")
    _one_line_error(dxgate("reprocess", "--config", str(cfg)), "state_dir:")
    cfg.write_text('[exposure]\nkvp = nan\n')
    _one_line_error(dxgate("check-config", str(cfg)), "exposure.kvp: nan is not a finite number")


def test_reprocess_lists_and_reports_nothing_to_do(tmp_path: Path) -> None:
    cfg = tmp_path / "dxgate.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    listed = dxgate("reprocess", "--config", str(cfg), "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "[]"
    done = dxgate("reprocess", "--config", str(cfg))
    assert done.returncode == 0 and "0 of 0 kept frame(s) imaged" in done.stdout


def test_queue_commands_offline_on_the_state_directory(tmp_path: Path) -> None:
    from gateway.spool import Spool
    from tests.spool.objects import make_object, put

    cfg = tmp_path / "dxgate.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    spool = Spool(tmp_path / "state" / "spool", tmp_path / "state" / "state.db", min_free_bytes=0)
    a, b = make_object(seed=1), make_object(seed=2)
    put(spool, a)
    put(spool, b)
    spool.quarantine(b.sop_instance_uid, "pacs", 0xC000, "refused by the archive", now=1.0)
    spool.close()
    listed = dxgate("queue", "--offline", "--config", str(cfg), "list", "--state", "quarantined", "--json")
    assert listed.returncode == 0, listed.stderr
    import json
    [row] = json.loads(listed.stdout)
    assert (row["sop_instance_uid"], row["state"], row["last_status"]) == (b.sop_instance_uid, "quarantined", 0xC000)
    _one_line_error(dxgate("queue", "--offline", "--config", str(cfg), "release", a.sop_instance_uid),
                    f"no quarantined delivery of {a.sop_instance_uid}")
    released = dxgate("queue", "--offline", "--config", str(cfg), "release", b.sop_instance_uid)
    assert released.returncode == 0 and "pending" in released.stdout
    spool = Spool(tmp_path / "state" / "spool", tmp_path / "state" / "state.db", min_free_bytes=0)
    try:  # the spool's own view, from a new connection
        assert [d.state.value for d in spool.deliveries(b.sop_instance_uid)] == ["pending"]
    finally:
        spool.close()


def test_user_changes_on_the_command_line_are_audited(tmp_path: Path) -> None:
    """Offline changes to who may log in are kept in the audit trail (sent by the daemon)."""
    from gateway.audit import AuditTrail

    cfg = tmp_path / "dxgate.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    for args in (("add", "alice", "--role", "admin"), ("passwd", "alice"), ("disable", "alice")):
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "user", "--config", str(cfg), *args,
                               "--password-stdin"], input="a long enough password\n", capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
    trail = AuditTrail(tmp_path / "state" / "state.db", source_id="DXGATE")
    try:
        events = [(r["event"], r["user"].startswith("os:")) for r in reversed(trail.query())]
        xml = [x for _, _, x in trail.unsent()]
    finally:
        trail.close()
    assert events == [("Security Roles Changed", True), ("User Security Attributes Changed", True),
                      ("User Security Attributes Changed", True)]
    assert "user alice added with role admin" in xml[0] and "password of user alice changed" in xml[1]
    assert "user alice disabled" in xml[2]


def test_dxgate_sim_hands_over_to_the_simulator_program(tmp_path: Path) -> None:
    """`dxgate sim ...` runs `python -m hw_sim ...` in its place (the gateway never imports it)."""
    done = dxgate("sim", "ctl", "--dir", str(tmp_path / "nosim"), "status")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "control.sock" in done.stderr or "simulator" in done.stderr, done.stderr
