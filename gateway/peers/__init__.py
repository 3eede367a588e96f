"""Embedded DICOM peers for `dxgate demo`: a worklist (RIS) and a storage SCP (PACS) on loopback.

They stand outside the pipeline (an import contract keeps them there); production talks to the
hospital's RIS and PACS, and the tests also to Orthanc and DCMTK.
"""

from gateway.peers.entries import make_worklist_entry, worklist_file_bytes
from gateway.peers.storage_server import StorageServer
from gateway.peers.worklist_server import WorklistServer

__all__ = ["StorageServer", "WorklistServer", "make_worklist_entry", "worklist_file_bytes"]
