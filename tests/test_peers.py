"""The peer fixtures themselves start the real programs and answer on loopback."""

from __future__ import annotations

from tests.peers import Orthanc, StoreSCP, WlmSCP


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
