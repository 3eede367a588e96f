"""The peer fixtures themselves start the real programs and answer on loopback."""

from __future__ import annotations

import pytest

from tests.peers import Orthanc, StoreSCP, WlmSCP, require


def test_orthanc_answers_rest_and_lists_worklist_plugin(orthanc: Orthanc) -> None:
    assert orthanc.rest("/system")["DicomAet"] == orthanc.aet
    assert "worklists" in orthanc.rest("/plugins")
    assert orthanc.instances() == []


def test_storescp_listens(storescp: StoreSCP) -> None:
    assert storescp.proc is not None and storescp.proc.poll() is None
    assert storescp.files() == []


def test_wlmscpfs_listens(wlmscpfs: WlmSCP) -> None:
    assert wlmscpfs.proc is not None and wlmscpfs.proc.poll() is None
    assert (wlmscpfs.worklist_dir / "lockfile").exists()


def test_a_missing_peer_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="real peer /usr/bin/no-such-peer is not installed"):
        require("/usr/bin/no-such-peer")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require("/usr/bin/no-such-peer")
