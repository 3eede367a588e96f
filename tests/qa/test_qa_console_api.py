"""The console's QA viewer and detector diagnostics through the running daemon (engineers and admins).

Two reports are made the way an engineer makes them (`dxgate calibrate`, then `dxgate qa --html`
twice on the simulator process, the second against a tighter cluster limit so it fails); then
`dxgate run` serves them. The truth is the reports' own JSON files in the configured directory,
the pages `dxgate qa` wrote, the calibration summary and the simulator's own status.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import (
    ApiConfig,
    CalibrationConfig,
    Config,
    DetectorConfig,
    GeneratorConfig,
    QaLimitsConfig,
    SpoolConfig,
    to_toml,
)
from gateway.qa import history
from tests.peers import free_port
from tests.service.processes import DaemonProcess, SimProcess, add_user, login

SERIAL = "SIM-QA-42"
MODE = "8x8"
DXGATE = [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())"]
PATHS = ("/api/console/qa", "/api/console/qa/trend", "/api/console/diagnostics")


def _dxgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DXGATE, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          check=False)


def _config(tmp_path: Path, sim: SimProcess, port: int, max_cluster: int = 50) -> Config:
    return Config(state_dir=str(tmp_path / "state"),
                  detector=DetectorConfig(mode=MODE, usb_backend="socket",
                                          backend_options={"path": sim.info["usb_socket"]}),
                  generator=GeneratorConfig(port=sim.info["generator_port"]),
                  calibration=CalibrationConfig(dark_frames=8, flat_frames=4, qa_flat_frames=2,
                                                qa_limits=QaLimitsConfig(max_cluster_pixels=max_cluster)),
                  spool=SpoolConfig(min_free_mb=0), api=ApiConfig(port=port))


def kept_page(qa_dir: Path, doc: dict[str, Any], page: Path) -> Path:
    """The page `dxgate qa` kept beside its report's JSON (where the console looks): the same
    bytes as the copy it wrote to --html."""
    where = qa_dir / doc["detector_serial"] / doc["mode"] / (history.report_name(doc) + history.PAGE_SUFFIX)
    assert where.with_suffix(".json").is_file() and where.read_bytes() == page.read_bytes()
    return where


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp_path = tmp_path_factory.mktemp("qa-console")
    sim = SimProcess(tmp_path / "sim").start("--seed", "5", "--serial", SERIAL, "--temperature", "27.5")
    daemon: DaemonProcess | None = None
    try:
        port = free_port()
        path = tmp_path / "dxgate.toml"
        path.write_text(to_toml(_config(tmp_path, sim, port)))
        done = _dxgate("calibrate", "--config", str(path), "--yes", "--json")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        pages = []
        for n, limit in enumerate((50, 0)):  # the second report: no cluster allowed, so it fails
            path.write_text(to_toml(_config(tmp_path, sim, port, max_cluster=limit)))
            page = tmp_path / f"qa{n}.html"
            qa = _dxgate("qa", "--config", str(path), "--yes", "--json", "--html", str(page))
            assert qa.returncode == n, qa.stdout + qa.stderr  # 0: passed, 1: failed
            pages.append(page)
        qa_dir = tmp_path / "state" / "qa"
        files = sorted((qa_dir / SERIAL / MODE).glob("*.json"))
        docs = [json.loads(f.read_text()) for f in files]
        assert len(docs) == 2 and [d["passed"] for d in docs] == [True, False]
        kept = [kept_page(qa_dir, d, p) for d, p in zip(docs, pages, strict=True)]
        for name, role in (("tina", "technologist"), ("eric", "engineer"), ("ada", "admin")):
            add_user(path, name, role)
        daemon = DaemonProcess(path, port, tmp_path).start()
        (tmp_path / "secret.html").write_text("<p>not a QA report</p>")
        yield {"root": tmp_path, "sim": sim, "daemon": daemon, "docs": docs, "files": files, "pages": kept,
               "summary": summary}
    finally:
        if daemon is not None:
            daemon.stop()
        sim.stop()


def test_qa_list_page_trend_and_diagnostics(served: dict[str, Any]) -> None:
    docs, files, pages = served["docs"], served["files"], served["pages"]
    with served["daemon"].client() as c:
        login(c, "eric")
        listed = c.get("/api/console/qa").json()
        assert listed["detector_serial"] == SERIAL and listed["mode"] == MODE
        reports = listed["reports"]
        assert [r["made_at"] for r in reports] == [d["made_at"] for d in reversed(docs)]  # newest first
        for r, doc, file in zip(reports, reversed(docs), reversed(files), strict=True):
            assert r["id"] == f"{SERIAL}/{MODE}/{file.stem}"
            assert (r["detector_serial"], r["mode"], r["calibration_id"], r["passed"], r["flats"]) == \
                (doc["detector_serial"], doc["mode"], doc["calibration_id"], doc["passed"], doc["flats"])
            assert r["checks"] == [{k: c[k] for k in ("name", "value", "limit", "passed")} for c in doc["checks"]]
            assert r["figures"] == {k: doc["uniformity"][k] for k in ("mean_signal", "mean_noise", "mean_snr")}
            assert (r["defect_fraction"], r["largest_cluster"], r["defect_counts"]) == \
                (doc["defect_fraction"], doc["largest_cluster"], doc["defect_counts"])
            assert r["page"] == f"/api/console/qa/{r['id']}.html"
        assert reports[0]["calibration_id"] == served["summary"]["calibration_id"]

        # one report's page: exactly the file kept, under a policy that runs nothing and fetches nothing
        page = c.get(reports[1]["page"])
        assert page.status_code == 200 and page.content == pages[0].read_bytes()
        assert page.headers["content-type"].startswith("text/html")
        csp = {d.split()[0]: d.split()[1:] for d in page.headers["content-security-policy"].split("; ")}
        assert csp["default-src"] == ["'none'"] and csp["script-src"] == ["'none'"]
        assert csp["connect-src"] == ["'none'"] and csp["img-src"] == ["data:"]
        assert csp["style-src"] == ["'unsafe-inline'"] and "sandbox" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert (served["root"] / "secret.html").is_file()  # what a path climbing out of the QA directory would reach
        for bad in ("/api/console/qa/%2E%2E/%2E%2E/secret.html",
                    f"/api/console/qa/{SERIAL}/{MODE}/..%2F..%2F..%2Fsecret.html",
                    f"/api/console/qa/{SERIAL}/{MODE}/nothing.html", f"/api/console/qa/..%2Fx/{MODE}/a.html"):
            assert c.get(bad).status_code == 404, bad

        # the trend: each check's value and limit in each report, oldest first
        trend = c.get("/api/console/qa/trend").json()
        assert trend["reports"] == 2
        names = [ch["name"] for ch in docs[0]["checks"]]
        assert [t["name"] for t in trend["checks"]] == names
        for t in trend["checks"]:
            mine = [next(ch for ch in d["checks"] if ch["name"] == t["name"]) for d in docs]
            assert t["points"] == [{"made_at": d["made_at"], "value": ch["value"], "limit": ch["limit"],
                                    "passed": ch["passed"]} for d, ch in zip(docs, mine, strict=True)]
            assert t["limit"] == mine[-1]["limit"]
        cluster = next(t for t in trend["checks"] if t["name"] == "largest cluster (pixels)")
        assert [p["limit"] for p in cluster["points"]] == [50, 0] and [p["passed"] for p in cluster["points"]] == \
            [True, False]
        assert c.get("/api/console/qa/trend", params={"serial": "../etc"}).status_code == 422
        assert c.get("/api/console/qa/trend", params={"serial": "OTHER"}).json()["checks"] == []

        # diagnostics: the panel as the simulator says it is, the set as `dxgate calibrate` made it
        diag = c.get("/api/console/diagnostics").json()
        status = served["sim"].call("status")
        det, cal, summary = diag["detector"], diag["calibration"], served["summary"]
        assert (det["serial"], det["model"], det["firmware"]) == (SERIAL, "SimPanel 4343", "2.1.0")
        assert det["temperature_c"] == pytest.approx(status["temperature_c"], abs=0.05)
        assert det["state"] == "idle" and det["mode"] == MODE
        assert cal["valid"] and cal["calibration_id"] == summary["calibration_id"]
        assert cal["temperature_c"] == pytest.approx(summary["temperature_c"], abs=0.01)
        assert cal["drift_c"] == pytest.approx(status["temperature_c"] - summary["temperature_c"], abs=0.05)
        assert cal["defect_counts"] == summary["defect_counts"] and sum(cal["defect_counts"].values()) > 0
        assert cal["offset_refreshed_at"] is None and 0 <= cal["age_s"] < 600
        assert diag["counters"]["frames_dropped"] == 0 and diag["counters"]["frames_recovered"] == 0
        served["sim"].call("temperature", celsius=33.25)  # the panel warms: the view follows it
        diag = c.get("/api/console/diagnostics").json()
        assert diag["detector"]["temperature_c"] == pytest.approx(33.25, abs=0.05)
        assert diag["calibration"]["drift_c"] == pytest.approx(33.25 - summary["temperature_c"], abs=0.05)

    with served["daemon"].client() as c:
        login(c, "ada")
        assert c.get(reports[0]["page"]).status_code == 200
        for path in PATHS:
            assert c.get(path).status_code == 200, path


def test_qa_views_refused_to_technologists_and_strangers(served: dict[str, Any]) -> None:
    page = "/api/console/qa/" + f"{SERIAL}/{MODE}/{served['files'][0].stem}.html"
    with served["daemon"].client() as c:
        for path in (*PATHS, page):
            assert c.get(path).status_code == 401, path
        login(c, "tina")
        for path in (*PATHS, page):
            r = c.get(path)
            assert r.status_code == 403 and "QA" not in r.text and "<html" not in r.text, path
