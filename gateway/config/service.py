"""Sections for the daemon itself: the spool, the local API, audit shipping and the service."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictBool, StrictInt, StrictStr, model_validator

from gateway.config.fields import Host, Number, OptionalPath, PortNumber, StatePath, _optional_host, _Section


class SpoolConfig(_Section):
    directory: StatePath = Field("spool", description="Where DICOM files wait to be forwarded (relative: under "
                                                      "state_dir).")
    database: StatePath = Field("state.db", description="SQLite state database (relative: under state_dir).")
    min_free_mb: StrictInt = Field(512, ge=0, le=1_000_000, description="Refuse acquisition when a state file "
                                                                        "system would fall below this much free space.")
    min_free_inodes: StrictInt = Field(1000, ge=0, le=1_000_000_000, description="Refuse acquisition when a state "
                                       "file system would fall below this many free inodes.")
    raw_directory: StatePath = Field("raw", description="Where raw frames are kept from the moment X-rays may have "
                                                        "been delivered until their image is spooled (relative: "
                                                        "under state_dir).")
    keep_raw_after_image: StrictBool = Field(False, description="Keep each raw frame after its image is spooled (for "
                                             "reprocessing with another calibration); false deletes it once saved.")
    db_busy_timeout_s: Number = Field(5.0, ge=0.1, le=600, description="Longest wait for another process's lock on "
                                                                      "the state database.")


class ApiConfig(_Section):
    host: Host = Field("127.0.0.1", description="Address the local API and console listen on (TLS needed beyond "
                                                "loopback).")
    port: StrictInt = Field(8080, ge=0, le=65535, description="API port (0: any free port).")
    tls_cert: OptionalPath = Field("", description="PEM certificate for HTTPS (required when host is not loopback).")
    tls_key: OptionalPath = Field("", description="PEM private key for HTTPS.")
    session_idle_s: Number = Field(900.0, ge=60, le=86400, description="A console session ends after this long idle.")
    session_max_s: Number = Field(43200.0, ge=300, le=7 * 86400, description="A console session ends after this long.")
    lockout_attempts: StrictInt = Field(5, ge=1, le=100, description="Wrong passwords in a row that lock a user.")
    lockout_s: Number = Field(900.0, ge=1, le=86400, description="How long a locked user stays locked.")
    min_password_length: StrictInt = Field(10, ge=8, le=256, description="Shortest password accepted.")
    socket: OptionalPath = Field("api.sock", description="Unix socket for the operator commands (`dxgate status`, "
                                 "`dxgate queue`), relative to state_dir; empty: none. Whoever can open it acts "
                                 "with socket_role, so it is owner-only unless socket_group is set.")
    socket_role: Literal["technologist", "engineer", "admin"] = Field(
        "admin", description="The role of a command arriving through the Unix socket.")
    socket_group: StrictStr = Field("", max_length=32, description="Group allowed to use the socket (mode 0660); "
                                    "empty: only the daemon's own user (and root). Put the socket in a directory "
                                    "the group can reach, e.g. /run/dxgate/api.sock with RuntimeDirectory.")

    @model_validator(mode="after")
    def _tls_beyond_loopback(self) -> ApiConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.host not in ("127.0.0.1", "::1", "localhost") and not self.tls_cert:
            raise ValueError(f"the API listens on {self.host}, beyond loopback: configure tls_cert and tls_key")
        return self


class AuditConfig(_Section):
    collector_host: Annotated[StrictStr, AfterValidator(_optional_host)] = Field(
        "", description="Syslog collector (ATNA audit record repository); empty: audit records are kept locally only.")
    collector_port: PortNumber = Field(6514, description="Collector port (6514 TLS, 601 TCP, 514 UDP).")
    transport: Literal["tls", "tcp", "udp"] = Field("tls", description="Syslog transport (RFC 5425 TLS, RFC 6587 "
                                                                       "TCP or RFC 5426 UDP).")
    ca_file: OptionalPath = Field("", description="CA bundle to verify the collector (TLS).")
    cert_file: OptionalPath = Field("", description="Client certificate for mutual TLS (optional).")
    key_file: OptionalPath = Field("", description="Client key for mutual TLS (optional).")


class ServiceConfig(_Section):
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level (reloadable).")
    stop_timeout_s: Number = Field(30.0, ge=1, le=300, description="SIGTERM: the longest the daemon takes to stop.")
    heartbeat_s: Number = Field(5.0, ge=0.1, le=300, description="How often each stage reports it is alive.")
