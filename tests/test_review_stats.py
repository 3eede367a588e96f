"""The review log (TG-305 rows), its summary and CSV, and the configuration view's redaction.

The figures are checked against numbers worked out here by hand, never against the module's own
arithmetic; the end-to-end check against the archive's EI/DI is in tests/console.
"""

from __future__ import annotations

import csv
import io
import stat
from pathlib import Path

import pytest

from gateway.api.console_routes import REDACTED, redact
from gateway.config import ApiConfig, Config, DestinationConfig
from gateway.review_stats import ReviewLog, ReviewRecord, records_csv, summary, summary_csv


def rec(uid: str, view: str, status: str, reason: str = "", di: float | None = 0.0, at: float = 100.0,
        technologist: str = "tina") -> ReviewRecord:
    ei = None if di is None else 400.0 * 10 ** (di / 10)
    return ReviewRecord(sop_instance_uid=uid, exposed_at=at, judged_at=at + 5, body_part="CHEST", view_position=view,
                        laterality="", protocol="Chest PA", technologist=technologist, status=status, reviewed=True,
                        reason=reason, ei=ei, target_ei=400.0, di=di, kvp=80.0, mas=1.2)


def test_summary_per_view_against_hand_worked_figures(tmp_path: Path) -> None:
    log = ReviewLog(tmp_path / "reviews.db")
    try:
        for r in (rec("1.1", "PA", "rejected", "positioning", di=2.0), rec("1.2", "PA", "rejected", "motion", di=-0.4),
                  rec("1.3", "PA", "accepted", di=0.6), rec("1.4", "PA", "accepted", di=None),
                  rec("1.5", "LL", "accepted", di=-1.2), rec("1.9", "LL", "accepted", at=50.0)):
            log.record(r)
        log.record(rec("1.3", "PA", "rejected", "motion", di=0.6))  # judged again: the later verdict replaces it
        assert stat.S_IMODE((tmp_path / "reviews.db").stat().st_mode) == 0o600
        stats = {s.view_position: s for s in summary(log.records(since=60.0))}
    finally:
        log.close()
    pa, ll = stats["PA"], stats["LL"]
    assert (pa.images, pa.accepted, pa.rejected) == (4, 1, 3)
    assert pa.reject_rate_pct == pytest.approx(75.0)
    assert pa.rejects_by_reason == {"motion": 2, "positioning": 1}
    assert pa.ei_count == 3  # the image without an EI counts as an image, not in the EI figures
    assert pa.di_mean == pytest.approx((2.0 - 0.4 + 0.6) / 3)
    assert pa.di_sd == pytest.approx((((2.0 - 0.7333333) ** 2 + (-0.4 - 0.7333333) ** 2 + (0.6 - 0.7333333) ** 2) / 2)
                                    ** 0.5, rel=1e-6)  # sample SD of 2.0, -0.4, 0.6
    assert pa.di_within_05_pct == pytest.approx(100 / 3) and pa.di_within_1_pct == pytest.approx(200 / 3)
    assert pa.ei_median == pytest.approx(400.0 * 10 ** 0.06)  # the middle DI, 0.6
    assert (ll.images, ll.rejected, ll.reject_rate_pct) == (1, 0, 0.0)  # the one at t=50 is before `since`
    text = summary_csv([pa, ll], ["positioning", "motion", "artifact"])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["view_position"], r["rejected_positioning"], r["rejected_motion"], r["rejected_artifact"],
             r["reject_rate_pct"]) for r in rows] == [("PA", "1", "2", "0", "75"), ("LL", "0", "0", "0", "0")]


def test_per_image_csv_cannot_carry_a_spreadsheet_formula() -> None:
    text = records_csv([rec("1.1", "PA", "rejected", "other", technologist="=HYPERLINK(\"x\")")])
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert row["technologist"].startswith("'=")
    assert (row["status"], row["reason"], row["reviewed"], row["di"]) == ("rejected", "other", "yes", "0")


def test_configuration_view_redacts_secrets_and_keeps_the_rest() -> None:
    config = Config(api=ApiConfig(tls_cert="/etc/dxgate/api.pem", tls_key="credential:apikey"),
                    destinations=(DestinationConfig(name="pacs", called_ae="PACS", tls=True,
                                                    tls_ca_file="/etc/dxgate/ca.pem",
                                                    tls_cert_file="/etc/dxgate/c.pem",
                                                    tls_key_file="/etc/dxgate/secret-key.pem"),))
    shown = redact(config.model_dump(mode="json"))
    assert shown["api"]["tls_key"] == REDACTED
    assert shown["destinations"][0]["tls_key_file"] == REDACTED
    assert "secret-key" not in repr(shown) and "apikey" not in repr(shown)
    assert shown["destinations"][0]["called_ae"] == "PACS" and shown["api"]["tls_cert"] == "/etc/dxgate/api.pem"
    assert shown["site"] == config.model_dump(mode="json")["site"]
