"""Modality Performed Procedure Step (PS3.4 Annex F) as SCU: what the room did, told to the RIS."""

from gateway.mpps.messages import DISCONTINUATION_REASONS, Performed, PerformedImage, completed, in_progress
from gateway.mpps.queue import MppsQueue, MppsRecord
from gateway.mpps.sender import MppsSender

__all__ = ["DISCONTINUATION_REASONS", "MppsQueue", "MppsRecord", "MppsSender", "Performed", "PerformedImage",
           "completed", "in_progress"]
