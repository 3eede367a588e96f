"""Stage: forward — C-STORE of spooled instances to the archives, with retries as data."""

from gateway.forward.commit_listener import CommitmentListener, ListenerSettings, settings_from
from gateway.forward.commitment import CommitmentEvent
from gateway.forward.forwarder import DeliveryResult, Forwarder
from gateway.forward.routing import NoDestination, ObjectSummary, admits, check_routable, destinations_for
from gateway.forward.status import Outcome, Verdict, classify_status

__all__ = ["CommitmentEvent", "CommitmentListener", "DeliveryResult", "Forwarder", "ListenerSettings", "NoDestination",
           "ObjectSummary", "Outcome", "Verdict", "admits", "check_routable", "classify_status", "destinations_for",
           "settings_from"]
