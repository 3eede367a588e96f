"""Stage: spool — the durability point (fsynced file + committed queue row)."""

from gateway.spool.commitments import ReportOutcome, Transaction, TransactionState
from gateway.spool.queue import Delivery, DeliveryState
from gateway.spool.retention import RetentionPolicy
from gateway.spool.spool import DEFAULT_MIN_FREE_BYTES, RecoveryReport, Spool

__all__ = ["DEFAULT_MIN_FREE_BYTES", "Delivery", "DeliveryState", "RecoveryReport", "ReportOutcome",
           "RetentionPolicy", "Spool", "Transaction", "TransactionState"]
