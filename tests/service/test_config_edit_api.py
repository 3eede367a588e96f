"""An admin changes the configuration file through the API of the running daemon: checked by the
loader (422 and nothing written when wrong), written atomically with `.previous`, reloaded as
SIGHUP would, secrets kept behind their placeholder, audited with the admin's name.

The truth is the file on disk, the daemon's running configuration and the archives' own files.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import tomli_w

from gateway.api.config_routes import keep_secrets
from gateway.config import AuditConfig, ConfigError, load, to_toml
from hw_sim.room import SimRoom
from tests.peers import StoreSCP
from tests.service.test_daemon import calibrate_and_arm, login, start, users, wait_for_files, write_config

KEY = "/etc/dxgate/audit-client.key"  # a secret the view redacts (audit.key_file)


def test_an_admin_changes_the_configuration_and_the_next_image_goes_to_the_new_archive(
        tmp_path: Path, room: SimRoom, storescp: StoreSCP, dciodvfy: Callable[[Path | str], None]) -> None:
    second = StoreSCP(tmp_path / "second", aet="SECOND").start()
    path = write_config(tmp_path, room, storescp)
    path.write_text(to_toml(load(path).model_copy(update={"audit": AuditConfig(cert_file="/etc/dxgate/audit.pem",
                                                                               key_file=KEY)})))
    path.chmod(0o640)
    users(path, room)
    original = path.read_bytes()
    previous = path.with_name(path.name + ".previous")
    run = start(path, room)
    try:
        with run.client() as eng:
            eng_csrf = login(eng, "eric")
            view = eng.get("/api/console/config/file").json()
            assert view["editable"] is False and KEY not in view["text"]
            assert eng.post("/api/console/config/file", json={"text": view["text"]},
                            headers=eng_csrf).status_code == 403  # only admins change it
        with run.client() as admin:
            csrf = login(admin, "ada")
            view = admin.get("/api/console/config/file").json()
            assert view["editable"] is True and view["path"] == str(path)
            shown = tomllib.loads(view["text"])
            assert shown["audit"]["key_file"] == "(redacted)" and KEY not in view["text"]
            assert shown["audit"]["cert_file"] == "/etc/dxgate/audit.pem"
            assert admin.post("/api/console/config/file", json={"text": view["text"]}).status_code == 403  # no CSRF

            def refused(text: str) -> str:
                r = admin.post("/api/console/config/file", json={"text": text}, headers=csrf)
                assert r.status_code == 422, r.text
                assert path.read_bytes() == original and not previous.exists()  # nothing written
                return str(r.json()["detail"])

            negative = dict(shown, worklist={**shown["worklist"], "timeout_s": -1.0})
            detail = refused(tomli_w.dumps(negative))
            assert detail.startswith(f"{path}: worklist.timeout_s: -1.0 is out of range"), detail
            assert "not valid TOML" in refused(view["text"] + "\n[[destinations]\nname = 'x'\n")
            # the placeholder where no secret is stored: refused, never written as a value
            placeholder = dict(shown, site={**shown.get("site", {}), "station_name": "(redacted)"})
            assert "site.station_name: '(redacted)' stands for a stored secret" in refused(tomli_w.dumps(placeholder))
            assert [d.name for d in run.daemon.config.destinations] == ["dcmtk"]  # the running one kept

            edited = dict(shown, destinations=[*shown["destinations"],
                                               {"name": "second", "port": second.port, "called_ae": "SECOND"}],
                          api={**shown["api"], "session_idle_s": 600.0})
            r = admin.post("/api/console/config/file", json={"text": tomli_w.dumps(edited)}, headers=csrf)
            assert r.status_code == 200, r.text
            answer = r.json()
            assert answer["applied"] == ["destinations"] and answer["needs_restart"] == ["api"], answer
            assert answer["reload"] == "applied: destinations"
            # the file is the new one, its secret kept; the old one is .previous; the mode unchanged
            written = tomllib.loads(path.read_text())
            assert written["audit"]["key_file"] == KEY and "(redacted)" not in path.read_text()
            assert [d["name"] for d in written["destinations"]] == ["dcmtk", "second"]
            assert previous.read_bytes() == original
            assert path.stat().st_mode & 0o777 == 0o640 and previous.stat().st_mode & 0o777 == 0o640
            assert load(path).audit.key_file == KEY
            # what took effect, and what waits for a restart
            assert [d.name for d in run.daemon.config.destinations] == ["dcmtk", "second"]
            assert run.daemon.config.api.session_idle_s == 900.0

            calibrate_and_arm(admin, csrf, room)
            uid = admin.post("/api/exam/expose", headers=csrf).json()["sop_instance_uid"]
            assert [pydicom.dcmread(p).SOPInstanceUID for p in wait_for_files(storescp.files, 1)] == [uid]
            [received] = wait_for_files(second.files, 1)
            assert pydicom.dcmread(received).SOPInstanceUID == uid
            dciodvfy(received)

            trail = admin.get("/api/audit").json()
            changes = [(r["user"], r["outcome"]) for r in trail if r["event"] == "Software Configuration"]
            assert ("ada", 0) in changes and changes.count(("ada", 4)) == 3, changes
            assert ("eric", 0) not in changes and ("eric", 4) not in changes
    finally:
        assert run.stop() == 0
        second.stop()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{path.name}.")]


def test_a_redacted_value_keeps_the_secret_of_the_same_destination() -> None:
    """Tables in a list are matched by name: reordering destinations does not swap their keys."""
    old = {"destinations": [{"name": "a", "tls_key_file": "/k/a.pem"}, {"name": "b", "tls_key_file": "/k/b.pem"}]}
    new = {"destinations": [{"name": "b", "tls_key_file": "(redacted)"}, {"name": "a", "tls_key_file": "(redacted)"}]}
    assert keep_secrets(new, old) == {"destinations": [{"name": "b", "tls_key_file": "/k/b.pem"},
                                                       {"name": "a", "tls_key_file": "/k/a.pem"}]}
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.tls_key_file"):
        keep_secrets({"destinations": [{"name": "c", "tls_key_file": "(redacted)"}]}, old)
