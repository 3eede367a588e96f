"""The security audit trail (DICOM PS3.15 A.5 messages, kept in SQLite, sent as RFC 5424 syslog)."""

from gateway.audit.messages import AuditEvent, Outcome, Participant
from gateway.audit.trail import AuditTrail

__all__ = ["AuditEvent", "AuditTrail", "Outcome", "Participant"]
