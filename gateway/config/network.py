"""Sections for the network peers: the worklist, the archives and the storage commitment listener."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictBool, StrictInt, StrictStr, model_validator

from gateway.config.fields import (
    AETitle,
    Host,
    Number,
    OptionalPath,
    PortNumber,
    StatePath,
    _ae_title,
    _body_part_term,
    _not_blank,
    _plain_text,
    _Section,
)
from gateway.uids import is_valid_uid

_CS_RE = re.compile(r"^[A-Z0-9_ ]*$")


def _code_string(value: str) -> str:
    """A DICOM code string (CS) such as a modality: upper-case letters, digits, '_' and space."""
    if not _CS_RE.match(value):
        raise ValueError(f"{value!r} is not a DICOM code string (upper-case letters, digits, '_' and space)")
    return value


Modality = Annotated[StrictStr, Field(max_length=16), AfterValidator(_code_string)]
DateRange = Literal["today", "none"]


class WorklistConfig(_Section):
    host: Host = Field("127.0.0.1", description="Worklist (RIS) server host.")
    port: PortNumber = Field(104, description="Worklist server port.")
    called_ae: AETitle = Field("RIS", description="Worklist server AE title.")
    match_station_ae: StrictBool = Field(
        False, description="Send site.ae_title as the Scheduled Station AE Title matching key. Off by default: many "
                           "RIS leave that attribute empty in their entries, and an empty value never matches a "
                           "non-empty key, so the worklist would come back empty. Turn it on when the RIS fills it "
                           "and shares the worklist between rooms.")
    modality: Modality = Field("DX", description="Modality matching key (a DICOM code string); empty: any modality.")
    station_name: Annotated[StrictStr, Field(max_length=16), AfterValidator(_plain_text)] = Field(
        "", description="Scheduled Station Name matching key (* and ? wildcards); empty: not matched.")
    date_range: DateRange = Field(
        "today", description="Scheduled Procedure Step Start Date matching key: 'today' asks for today - "
                             "days_before .. today + days_ahead; 'none' sends no date (max_answers and "
                             "max_query_s still bound the query).")
    days_before: StrictInt = Field(0, ge=0, le=30, description="Also fetch steps scheduled up to this many days "
                                                               "before today (date_range 'today').")
    days_ahead: StrictInt = Field(0, ge=0, le=30, description="Also fetch steps scheduled up to this many days "
                                                              "ahead (date_range 'today').")
    timeout_s: Number = Field(10.0, ge=0.5, le=300, description="Network timeout for the query.")
    max_query_s: Number = Field(30.0, ge=1, le=600, description="Longest a whole worklist query may take, answers "
                                                               "included.")
    max_answers: StrictInt = Field(2000, ge=1, le=100_000,
                                   description="Most answers one worklist query may return; more end the query.")
    refresh_s: Number = Field(300.0, ge=10, le=86400, description="How often the daemon asks the RIS for the day's "
                                                                 "worklist.")
    cache: StatePath = Field("worklist-cache.json", description="Last worklist answer, used while the RIS is "
                                                                "unreachable (relative: under state_dir).")

    @model_validator(mode="after")
    def _dates(self) -> WorklistConfig:
        if self.date_range == "none" and (self.days_before or self.days_ahead):
            raise ValueError("days_before and days_ahead apply to date_range 'today'; with 'none' no date is asked")
        return self


def _sop_class(value: str) -> str:
    if not is_valid_uid(value):
        raise ValueError(f"{value!r} is not a SOP Class UID (digits and dots)")
    return value


class DestinationConfig(_Section):
    name: Annotated[StrictStr, Field(max_length=64), AfterValidator(_not_blank), AfterValidator(_plain_text)] = Field(
        "pacs", description="Destination name, used in the queue and in logs.")
    host: Host = Field("127.0.0.1", description="Archive host.")
    port: PortNumber = Field(104, description="Archive port.")
    called_ae: AETitle = Field("PACS", description="Archive AE title.")
    max_pdu: StrictInt = Field(131072, ge=4096, le=4_194_304, description="Maximum PDU length offered.")
    timeout_s: Number = Field(30.0, ge=1, le=600, description="Network timeout for DIMSE and association.")
    associations: StrictInt = Field(1, ge=1, le=8, description="Associations a forwarding pass opens to this archive "
                                    "at once, each sending its share of the backlog (every image still sent once).")
    for_processing: StrictBool = Field(False, description="Send this archive the DX For Processing image too (the "
                                       "linear frame, its own SOP Instance UID, the same acquisition).")
    commitment: StrictBool = Field(False, description="Ask this archive for Storage Commitment (Push Model) after "
                                   "each batch; a spooled file is deleted only once it committed it. Needs "
                                   "[commitment_listener] reachable from the archive.")
    commitment_timeout_s: Number = Field(600.0, ge=1, le=7 * 86400, description="No commitment report this long after "
                                         "a request: ask again.")
    commitment_asks: StrictInt = Field(3, ge=1, le=100, description="Commitment requests per transaction; when the "
                                       "last goes unanswered an alarm is raised (the files are kept).")
    commitment_hold_s: Number = Field(2.0, ge=0, le=60, description="How long the association stays open after a "
                                      "commitment request for a report on it (0: report on a new association only).")
    retention_s: Number = Field(7 * 86400.0, ge=0, le=3650 * 86400, description="Without commitment: a spooled file "
                                "is deleted this long after this archive stored it (and every other destination is "
                                "done with it). Never to make room.")
    tls: StrictBool = Field(False, description="DICOM TLS (TLS 1.2 or later) to this archive; its certificate is "
                            "verified against tls_ca_file and its host name or address.")
    tls_ca_file: OptionalPath = Field("", description="CA bundle (PEM) that signs the archive's certificate; a path, "
                                      "or credential:NAME for a systemd credential.")
    tls_cert_file: OptionalPath = Field("", description="dxgate's client certificate (PEM) for mutual TLS; empty: "
                                        "none. A path or credential:NAME.")
    tls_key_file: OptionalPath = Field("", description="The private key (PEM) of tls_cert_file. A path or "
                                       "credential:NAME.")
    transfer_syntax: Literal["explicit", "jpeg-ls-lossless", "jpeg2000-lossless", "rle"] = Field(
        "explicit", description="Send images losslessly compressed in this syntax when the archive accepts it "
                                "(else Explicit VR Little Endian); the spool keeps the original.")
    only_sop_classes: tuple[Annotated[StrictStr, AfterValidator(_sop_class)], ...] = Field(
        (), description="Route only objects of these SOP Class UIDs here (empty: any).")
    only_modalities: tuple[Modality, ...] = Field((), description="Route only objects of these modalities here "
                                                                  "(empty: any).")
    only_body_parts: tuple[Annotated[StrictStr, AfterValidator(_body_part_term)], ...] = Field(
        (), description="Route only objects of these Body Part Examined terms here (empty: any).")
    review_hold: StrictBool = Field(True, description="Images wait here for the technologist's verdict ([review] "
                                    "hold_s); false: this destination receives at once (e.g. a research archive), "
                                    "and a later rejection reaches it only as a rejection note.")
    send_rejection_kos: StrictBool | None = Field(None, description="Send this destination a rejection note (KOS "
                                                  "'Rejected for Quality Reasons') for a rejected image that already "
                                                  "left for it; unset: [review] send_rejection_kos.")

    @model_validator(mode="after")
    def _tls_files(self) -> DestinationConfig:
        if self.tls and not self.tls_ca_file:
            raise ValueError("tls = true needs tls_ca_file (the CA that signs the archive's certificate)")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_cert_file and not self.tls:
            raise ValueError("tls_cert_file is set but tls = false")
        return self


def _optional_ae(value: str) -> str:
    return value if value == "" else _ae_title(value)


class CommitmentListenerConfig(_Section):
    ae_title: Annotated[StrictStr, AfterValidator(_optional_ae)] = Field(
        "", description="AE title the archives call to report storage commitment (empty: site.ae_title).")
    host: Host = Field("127.0.0.1", description="Address the storage commitment listener binds to; it runs when a "
                                                "destination has commitment = true.")
    port: PortNumber = Field(11112, description="Port of the storage commitment listener.")
    allowed_calling_aes: tuple[AETitle, ...] = Field(
        (), description="Calling AE titles admitted (empty: the called AE titles of the destinations with commitment).")
    allowed_hosts: tuple[Host, ...] = Field(
        (), description="Peer hosts or addresses admitted (empty: the hosts of the destinations with commitment).")
    timeout_s: Number = Field(30.0, ge=1, le=600, description="Network timeout of the listener's associations.")
    tls: StrictBool = Field(False, description="DICOM TLS (TLS 1.2 or later) on the listener, with tls_cert_file "
                            "and tls_key_file as its server certificate.")
    tls_cert_file: OptionalPath = Field("", description="The listener's certificate (PEM). A path or credential:NAME.")
    tls_key_file: OptionalPath = Field("", description="The listener's private key (PEM). A path or credential:NAME.")
    tls_ca_file: OptionalPath = Field("", description="CA bundle (PEM) that signs the archives' client certificates; "
                                      "a client certificate that is presented is verified against it.")
    tls_require_client_cert: StrictBool = Field(False, description="Refuse archives that present no client "
                                                "certificate signed by tls_ca_file (mutual TLS).")

    @model_validator(mode="after")
    def _tls_files(self) -> CommitmentListenerConfig:
        if self.tls and not (self.tls_cert_file and self.tls_key_file):
            raise ValueError("tls = true needs tls_cert_file and tls_key_file")
        if self.tls_require_client_cert and not (self.tls and self.tls_ca_file):
            raise ValueError("tls_require_client_cert needs tls = true and tls_ca_file")
        return self
