"""Stage: forward — C-STORE of spooled instances to the archives, with retries as data."""

from gateway.forward.forwarder import DeliveryResult, Forwarder
from gateway.forward.status import Outcome, Verdict, classify_status

__all__ = ["DeliveryResult", "Forwarder", "Outcome", "Verdict", "classify_status"]
