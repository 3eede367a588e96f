"""Commitment configuration (documented, validated), the listener it asks for, and its metrics."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Config, from_dict, to_toml
from gateway.errors import ConfigError
from gateway.forward import CommitmentEvent, settings_from
from gateway.metrics import Metrics


def test_default_config_documents_every_commitment_key() -> None:
    text = to_toml(Config())
    for key in ("commitment", "commitment_timeout_s", "commitment_asks", "commitment_hold_s", "retention_s",
                "allowed_calling_aes", "allowed_hosts"):
        assert f"\n{key} = " in text
    assert "[commitment_listener]" in text
    parsed = tomllib.loads(text)
    assert parsed["commitment_listener"]["host"] == "127.0.0.1"
    assert parsed["destinations"][0]["commitment"] is False
    assert from_dict(parsed) == Config()  # what it prints is what it reads


@pytest.mark.parametrize("raw, message", [
    ({"destinations": [{"commitment": "yes"}]}, "destinations[0].commitment"),
    ({"destinations": [{"commitment_timeout_s": 0}]}, "destinations[0].commitment_timeout_s"),
    ({"destinations": [{"commitment_asks": 0}]}, "destinations[0].commitment_asks"),
    ({"destinations": [{"commitment_hold_s": float("nan")}]}, "not a finite number"),
    ({"destinations": [{"retention_s": -1}]}, "destinations[0].retention_s"),
    ({"commitment_listener": {"ae_title": "A" * 17}}, "commitment_listener.ae_title"),
    ({"commitment_listener": {"allowed_calling_aes": ["OK", "BAD\\AE"]}}, "commitment_listener.allowed_calling_aes"),
    ({"commitment_listener": {"allowed_hosts": ["a host"]}}, "commitment_listener.allowed_hosts"),
    ({"commitment_listener": {"port": 0}}, "commitment_listener.port"),
    ({"commitment_listener": {"tls_version": "1.3"}}, "unknown key"),
])
def test_bad_commitment_settings_are_refused_naming_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_dict(raw)


def test_listener_only_when_a_destination_commits_and_its_allow_list() -> None:
    assert settings_from(Config()) is None
    cfg = from_dict({"site": {"ae_title": "ROOM1"}, "destinations": [
        {"name": "pacs", "host": "10.0.0.5", "called_ae": "PACS", "commitment": True},
        {"name": "research", "host": "10.0.0.6", "called_ae": "RESEARCH"},
        {"name": "pacs2", "host": "10.0.0.5", "called_ae": "PACS2", "commitment": True}]})
    s = settings_from(cfg)
    assert s is not None
    assert (s.ae_title, s.host, s.port) == ("ROOM1", "127.0.0.1", 11112)
    assert s.allowed_aes == {"PACS", "PACS2"} and s.allowed_hosts == ("10.0.0.5",)  # not the research archive
    explicit = from_dict({**cfg.model_dump(), "commitment_listener": {
        "ae_title": "DXCOMMIT", "host": "0.0.0.0", "port": 4104, "allowed_calling_aes": ["ARCHIVE_OUT"],
        "allowed_hosts": ["10.0.0.9"]}})
    s = settings_from(explicit)
    assert s is not None and (s.ae_title, s.host, s.port) == ("DXCOMMIT", "0.0.0.0", 4104)
    assert s.allowed_aes == {"ARCHIVE_OUT"} and s.allowed_hosts == ("10.0.0.9",)


def test_commitment_metrics() -> None:
    m = Metrics()
    m.levels.commitments = lambda: {("pacs", "open"): 2, ("pacs", "answered"): 5}
    m.levels.queue = lambda: {("pacs", "committed"): 7, ("pacs", "sending"): 1}
    m.record_commitment(CommitmentEvent("pacs", "committed", 3))
    m.record_commitment(CommitmentEvent("pacs", "committed", 4))
    m.record_commitment(CommitmentEvent("pacs", "quarantined", 1))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(m.render().decode()) for s in fam.samples}
    assert samples[("dxgate_commitment_transactions", (("destination", "pacs"), ("state", "open")))] == 2
    assert samples[("dxgate_commitment_instances_total", (("destination", "pacs"), ("outcome", "committed")))] == 7
    assert samples[("dxgate_commitment_instances_total", (("destination", "pacs"), ("outcome", "quarantined")))] == 1
    assert samples[("dxgate_queue_deliveries", (("destination", "pacs"), ("state", "committed")))] == 7
