"""DICOM audit messages (PS3.15 A.5, the RFC 3881 schema ATNA repositories read).

Each event is an EventIdentification (what, when, outcome), the active participants (the user,
this application, the peer node) and the objects concerned (a study, a patient, a SOP class).
Audit records are where patient identifiers belong (an access log a privacy officer reads): an
instance transfer names its Study Instance UID and Patient ID, never the patient's name, and no
query content is copied (it may hold a name).
"""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

# (code, meaning) in the DCM coding scheme (PS3.16 CID 400-405)
APPLICATION_ACTIVITY = ("110100", "Application Activity")
APPLICATION_START = ("110120", "Application Start")
APPLICATION_STOP = ("110121", "Application Stop")
USER_AUTHENTICATION = ("110114", "User Authentication")
LOGIN = ("110122", "Login")
LOGOUT = ("110123", "Logout")
QUERY = ("110112", "Query")
INSTANCES_TRANSFERRED = ("110104", "DICOM Instances Transferred")
SECURITY_ALERT = ("110113", "Security Alert")
NODE_AUTHENTICATION = ("110126", "Node Authentication")
SOFTWARE_CONFIGURATION = ("110131", "Software Configuration")
USE_OF_RESTRICTED_FUNCTION = ("110132", "Use of Restricted Function")
SECURITY_ROLES_CHANGED = ("110136", "Security Roles Changed")
USER_SECURITY_ATTRIBUTES_CHANGED = ("110137", "User Security Attributes Changed")
ROLE_APPLICATION = ("110150", "Application")
ROLE_SOURCE = ("110153", "Source Role ID")
ROLE_DESTINATION = ("110152", "Destination Role ID")
ROLE_LAUNCHER = ("110151", "Application Launcher")
STUDY_UID_TYPE = ("110180", "Study Instance UID")
SOP_CLASS_TYPE = ("110181", "SOP Class UID")
MWL_FIND = "1.2.840.10008.5.1.4.31"


class Outcome(enum.IntEnum):
    """EventOutcomeIndicator."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


@dataclass(frozen=True)
class Participant:
    user_id: str
    requestor: bool
    role: tuple[str, str] | None = None
    network_address: str = ""
    user_name: str = ""


@dataclass(frozen=True)
class ParticipantObject:
    object_id: str
    type_code: int  # 1 person, 2 system object
    role: int  # 1 patient, 3 report, 4 resource...
    id_type: tuple[str, str] | None = None  # DCM code; None: RFC 3881 code given in id_type_rfc
    id_type_rfc: str = ""  # e.g. "2" Patient Number
    detail: str = ""  # ParticipantObjectDescription (e.g. the number of instances)


@dataclass(frozen=True)
class AuditEvent:
    event: tuple[str, str]
    action: str  # C R U D E
    outcome: Outcome
    when: datetime
    event_type: tuple[str, str] | None = None
    participants: tuple[Participant, ...] = ()
    objects: tuple[ParticipantObject, ...] = ()
    description: str = ""  # EventOutcomeDescription: why it failed, no patient data

    @property
    def name(self) -> str:
        return (self.event_type or self.event)[1]


def _code(parent: ET.Element, tag: str, code: tuple[str, str]) -> None:
    ET.SubElement(parent, tag, {"csd-code": code[0], "codeSystemName": "DCM", "originalText": code[1]})


def to_xml(event: AuditEvent, *, source_id: str, site: str = "") -> str:
    """The event as a DICOM audit message (UTF-8 XML, no declaration)."""
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": event.action, "EventDateTime": event.when.isoformat(timespec="milliseconds"),
        "EventOutcomeIndicator": str(int(event.outcome))})
    _code(ident, "EventID", event.event)
    if event.event_type is not None:
        _code(ident, "EventTypeCode", event.event_type)
    if event.description:
        ET.SubElement(ident, "EventOutcomeDescription").text = event.description
    for p in event.participants:
        attrs = {"UserID": p.user_id, "UserIsRequestor": "true" if p.requestor else "false"}
        if p.user_name:
            attrs["UserName"] = p.user_name
        if p.network_address:
            attrs["NetworkAccessPointID"] = p.network_address
            attrs["NetworkAccessPointTypeCode"] = "2"  # IP address
        ap = ET.SubElement(root, "ActiveParticipant", attrs)
        if p.role is not None:
            _code(ap, "RoleIDCode", p.role)
    src = ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": source_id, **(
        {"AuditEnterpriseSiteID": site} if site else {})})
    ET.SubElement(src, "AuditSourceTypeCode", {"csd-code": "4"})  # application server process
    for o in event.objects:
        po = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": o.object_id, "ParticipantObjectTypeCode": str(o.type_code),
            "ParticipantObjectTypeCodeRole": str(o.role)})
        if o.id_type is not None:
            _code(po, "ParticipantObjectIDTypeCode", o.id_type)
        else:
            ET.SubElement(po, "ParticipantObjectIDTypeCode", {"csd-code": o.id_type_rfc,
                                                              "codeSystemName": "RFC-3881"})
        if o.detail:
            ET.SubElement(po, "ParticipantObjectDescription").text = o.detail
    return ET.tostring(root, encoding="unicode")


def study(uid: str, detail: str = "") -> ParticipantObject:
    return ParticipantObject(uid, 2, 3, STUDY_UID_TYPE, detail=detail)


def patient(patient_id: str) -> ParticipantObject:
    return ParticipantObject(patient_id, 1, 1, None, "2")


def sop_class(uid: str) -> ParticipantObject:
    return ParticipantObject(uid, 2, 3, SOP_CLASS_TYPE)


# --- the events dxgate records -----------------------------------------------------------------

def application(started: bool, *, ae_title: str, when: datetime, user: str = "") -> AuditEvent:
    return AuditEvent(APPLICATION_ACTIVITY, "E", Outcome.SUCCESS, when,
                      APPLICATION_START if started else APPLICATION_STOP,
                      (Participant(ae_title, False, ROLE_APPLICATION),
                       *((Participant(user, True, ROLE_LAUNCHER),) if user else ())))


def authentication(login: bool, *, user: str, outcome: Outcome, address: str, when: datetime,
                   description: str = "") -> AuditEvent:
    return AuditEvent(USER_AUTHENTICATION, "E", outcome, when, LOGIN if login else LOGOUT,
                      (Participant(user, True, network_address=address),), description=description)


def worklist_query(*, ae_title: str, ris: str, address: str, outcome: Outcome, when: datetime,
                   description: str = "") -> AuditEvent:
    return AuditEvent(QUERY, "E", outcome, when, None,
                      (Participant(ae_title, True, ROLE_SOURCE), Participant(ris, False, ROLE_DESTINATION,
                                                                             network_address=address)),
                      (sop_class(MWL_FIND),), description=description)


def instances_transferred(*, ae_title: str, destination: str, address: str, study_uid: str, patient_id: str,
                          outcome: Outcome, when: datetime, description: str = "") -> AuditEvent:
    objects = [study(study_uid, "1 instance")] if study_uid else []
    if patient_id:
        objects.append(patient(patient_id))
    return AuditEvent(INSTANCES_TRANSFERRED, "R", outcome, when, None,
                      (Participant(ae_title, True, ROLE_SOURCE),
                       Participant(destination, False, ROLE_DESTINATION, network_address=address)),
                      tuple(objects), description=description)


def security_alert(kind: tuple[str, str], *, who: str, outcome: Outcome, when: datetime, description: str,
                   address: str = "") -> AuditEvent:
    return AuditEvent(SECURITY_ALERT, "E", outcome, when, kind,
                      (Participant(who, True, network_address=address),), description=description)


def association_refused(*, calling_ae: str, address: str, called_ae: str, reason: str,
                        when: datetime) -> AuditEvent:
    """PS3.15 A.5.3.11 Security Alert (Node Authentication): a DICOM association was refused.

    The peer that asked (calling AE, its address) is the performing participant, the refusing
    application (called AE) the reporting one, and the alert subject names the peer node."""
    return AuditEvent(SECURITY_ALERT, "E", Outcome.MINOR_FAILURE, when, NODE_AUTHENTICATION,
                      (Participant(calling_ae or "-", True, network_address=address),
                       Participant(called_ae or "-", False, ROLE_APPLICATION)),
                      (ParticipantObject(f"{calling_ae or '-'}@{address}", 2, 13, None, "12"),),
                      description=f"association refused: {reason}")


def tls_failed(*, local_ae: str, peer: str, address: str, reason: str, when: datetime,
               outbound: bool = True) -> AuditEvent:
    """PS3.15 A.5.3.11 Security Alert (Node Authentication): a DICOM TLS handshake failed (a
    certificate not trusted, expired or refused); nothing was exchanged. The peer node is the
    alert subject; `outbound`: dxgate connected to it (else it connected to dxgate)."""
    direction = "to" if outbound else "from"
    return AuditEvent(SECURITY_ALERT, "E", Outcome.SERIOUS_FAILURE, when, NODE_AUTHENTICATION,
                      (Participant(local_ae or "-", outbound, ROLE_APPLICATION),
                       Participant(peer or "-", not outbound, network_address=address)),
                      (ParticipantObject(peer or address or "-", 2, 13, None, "12"),),
                      description=f"DICOM TLS {direction} {peer or address} failed: {reason}"[:200])
