"""Prometheus metrics of one gateway (prometheus-client), in a registry of their own.

Counters and histograms are updated by the stages as things happen; levels that already live
elsewhere (queue depth per destination and state, free disk, detector temperature, calibration
age, heartbeat ages, active alarms) are read at scrape time through callables, so there is one
source of truth and nothing to keep in sync. Labels never carry patient data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LOGGER = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 30.0)


@dataclass
class Levels:
    """Scrape-time readers; each returns the current value(s) or raises (the scrape goes on)."""

    queue: Callable[[], Mapping[tuple[str, str], int]] = dict  # (destination, state) -> deliveries
    disk_free_bytes: Callable[[], Mapping[str, int]] = dict  # path -> free bytes
    detector_temperature_c: Callable[[], float | None] = lambda: None
    calibration_age_s: Callable[[], float | None] = lambda: None
    heartbeat_ages_s: Callable[[], Mapping[str, float]] = dict
    alarms: Callable[[], Mapping[str, int]] = dict  # alarm code -> active count
    stage_queues: Callable[[], Mapping[str, int]] = dict  # stage queue -> items waiting
    commitments: Callable[[], Mapping[tuple[str, str], int]] = dict  # (destination, state) -> transactions
    extra: list[Callable[[], Iterable[Metric]]] = field(default_factory=list)


class _LevelCollector(Collector):
    def __init__(self, levels: Levels) -> None:
        self._levels = levels

    def collect(self) -> Iterable[Metric]:
        yield from self._family("dxgate_queue_deliveries", "Deliveries in the spool per destination and state.",
                                ["destination", "state"],
                                lambda: {k: float(v) for k, v in self._levels.queue().items()})
        yield from self._family("dxgate_disk_free_bytes", "Free bytes on each state file system.", ["path"],
                                lambda: {(k,): float(v) for k, v in self._levels.disk_free_bytes().items()})
        yield from self._family("dxgate_stage_heartbeat_age_seconds", "Seconds since each stage last beat.",
                                ["stage"], lambda: {(k,): v for k, v in self._levels.heartbeat_ages_s().items()})
        yield from self._family("dxgate_alarms_active", "Active alarms by code.", ["code"],
                                lambda: {(k,): float(v) for k, v in self._levels.alarms().items()})
        yield from self._family("dxgate_stage_queue_depth", "Items waiting in each bounded stage queue.", ["queue"],
                                lambda: {(k,): float(v) for k, v in self._levels.stage_queues().items()})
        yield from self._family("dxgate_commitment_transactions",
                                "Storage commitment transactions per destination and state (open, answered, "
                                "unanswered).", ["destination", "state"],
                                lambda: {k: float(v) for k, v in self._levels.commitments().items()})
        yield from self._single("dxgate_detector_temperature_celsius", "Detector temperature.",
                                self._levels.detector_temperature_c)
        yield from self._single("dxgate_calibration_age_seconds", "Age of the active calibration set.",
                                self._levels.calibration_age_s)
        for extra in self._levels.extra:
            yield from self._guard(extra)

    def _family(self, name: str, doc: str, labels: list[str],
                read: Callable[[], Mapping[tuple[str, ...], float]]) -> Iterable[Metric]:
        fam = GaugeMetricFamily(name, doc, labels=labels)
        try:
            for key, value in read().items():
                fam.add_metric(list(key), value)
        except Exception as exc:  # a failing reader must not break the whole scrape
            LOGGER.warning("metric %s unavailable: %s", name, exc)
        yield fam

    def _single(self, name: str, doc: str, read: Callable[[], float | None]) -> Iterable[Metric]:
        try:
            value = read()
        except Exception as exc:
            LOGGER.warning("metric %s unavailable: %s", name, exc)
            value = None
        if value is not None:
            yield GaugeMetricFamily(name, doc, value=value)

    @staticmethod
    def _guard(read: Callable[[], Iterable[Metric]]) -> Iterable[Metric]:
        try:
            yield from list(read())
        except Exception as exc:
            LOGGER.warning("extra metrics unavailable: %s", exc)


class Metrics:
    """The gateway's metrics. Pass `levels` readers once the stages exist (`bind`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.exposures = Counter("dxgate_exposures", "Exposures by outcome (saved, refused, kept_raw, failed).",
                                 ["outcome"], registry=r)
        self.images_saved = Counter("dxgate_images_saved", "Images made durable in the spool.", registry=r)
        self.frames_dropped = Counter("dxgate_frames_dropped", "Frames lost after readout (always 0: queues block).",
                                      registry=r)
        self.send_seconds = Histogram("dxgate_send_seconds", "C-STORE time per instance, request to response.",
                                      ["destination"], buckets=SEND_BUCKETS, registry=r)
        self.bytes_sent = Counter("dxgate_bytes_sent", "Bytes of instances stored at a destination.",
                                  ["destination"], registry=r)
        self.send_results = Counter("dxgate_send_results", "C-STORE outcomes by destination, outcome and status.",
                                    ["destination", "outcome", "status"], registry=r)
        self.commitment_instances = Counter(
            "dxgate_commitment_instances", "Storage commitment by destination and outcome (requested, "
            "request_failed, committed, resent, quarantined, unanswered), in instances.",
            ["destination", "outcome"], registry=r)
        self.levels = Levels()
        r.register(_LevelCollector(self.levels))

    def record_send(self, result: Any) -> None:
        """A forwarding result (gateway.forward.DeliveryResult), counted by outcome and status."""
        status = "none" if result.status is None else f"0x{result.status:04X}"
        self.send_results.labels(result.destination, str(result.outcome), status).inc()

    def record_commitment(self, event: Any) -> None:
        """A storage commitment event (gateway.forward.CommitmentEvent)."""
        self.commitment_instances.labels(event.destination, event.outcome).inc(event.count)

    def render(self) -> bytes:
        """The text exposition format, for GET /metrics."""
        return generate_latest(self.registry)
