"""Soak: N exposures through the running daemon, as a room makes them.

Starts the simulator process (`python -m hw_sim`), DCMTK storescp (TCP_NODELAY=1) as the
archive and `dxgate run` under a fake NOTIFY_SOCKET; calibrates through the API, opens an exam,
arms, and presses the simulated hand switch N times. Reports (JSON):

- ready_s: from `dxgate run` starting to READY=1 (goal <= 2 s);
- rss_mb at start (ready), after a warm-up (the first 10 % of the exposures), at the last
  exposure and after the archive has everything; growth from warm-up to the end
  (goal <= 300 MB, growth <= 5 %);
- exposures_per_min;
- latency percentiles from the end of readout (the daemon's "read frame" line, written
  right after the last byte) to the archive's acknowledgement (its "sent" line) (goal p95 <= 0.4 s);
- delivered: files the archive holds, against images saved.

    .venv/bin/python bench/soak.py [--exposures 1000] [--mode 1x1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import (  # noqa: E402
    ApiConfig,
    CalibrationConfig,
    Config,
    DestinationConfig,
    DetectorConfig,
    GeneratorConfig,
    ReviewConfig,
    SpoolConfig,
    WorklistConfig,
    to_toml,
)
from tests.peers import StoreSCP, free_port  # noqa: E402
from tests.service.processes import DaemonProcess, SimProcess, add_user, login, until  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_by_mapping(pid: int, top: int = 6) -> dict[str, float]:
    """Resident MB per mapping name (anonymous memory as "[anon]"), the largest first."""
    sizes: dict[str, float] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):
            fields = rest.split()
            name = Path(fields[4]).name if len(fields) >= 5 else "[anon]"
        elif head == "Rss:":
            sizes[name] = sizes.get(name, 0.0) + int(rest.split()[0]) / 1024
    return {k: round(v, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:top]}


def _p50_p95(values: list[float]) -> dict[str, float] | None:
    if len(values) < 2:
        return None
    q = statistics.quantiles(values, n=100)
    return {"p50": round(q[49], 3), "p95": round(q[94], 3)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exposures", type=int, default=1000)
    ap.add_argument("--mode", default="1x1")
    args = ap.parse_args()
    os.environ.setdefault("TCP_NODELAY", "1")
    with tempfile.TemporaryDirectory(prefix="dxgate-soak-") as tmp:
        root = Path(tmp)
        (root / "sim").mkdir()
        sim = SimProcess(root / "sim").start()
        pacs = StoreSCP(root / "pacs")
        pacs.root.mkdir()
        pacs.start()
        api_port = free_port()
        config = root / "dxgate.toml"
        config.write_text(to_toml(Config(
            state_dir=str(root / "state"),
            detector=DetectorConfig(mode=args.mode, usb_backend="socket",
                                    backend_options={"path": sim.info["usb_socket"]}, frame_timeout_s=60),
            generator=GeneratorConfig(port=sim.info["generator_port"]),
            calibration=CalibrationConfig(dark_frames=4, flat_frames=4),
            worklist=WorklistConfig(port=free_port(), timeout_s=1.0), spool=SpoolConfig(min_free_mb=0),
            api=ApiConfig(port=api_port),
            # readout-to-archive latency of a room that sends at once: no review hold (nobody judges here)
            review=ReviewConfig(hold_s=0),
            destinations=(DestinationConfig(name="pacs", port=pacs.port, called_ae=pacs.aet),))))
        add_user(config, "eric", "engineer")
        daemon = DaemonProcess(config, api_port, root).start()
        assert daemon.proc is not None
        try:
            with daemon.client() as c:
                csrf = login(c, "eric")
                sim.call("place", scene="open")
                c.post("/api/calibration", headers=csrf)
                until(lambda: c.get("/api/calibration").json()["state"] != "running", timeout_s=600)
                sim.call("place", scene="chest")
                c.post("/api/exam", json={}, headers=csrf)
                c.post("/api/exam/view", json={"body_part": "CHEST", "view_position": "PA", "kvp": 80, "mas": 1.2},
                       headers=csrf)
                c.post("/api/exam/arm", json={"armed": True}, headers=csrf)
                rss: list[float] = [rss_mb(daemon.proc.pid)]
                warm = max(1, args.exposures // 10)
                t0 = time.monotonic()
                for n in range(args.exposures):
                    try:
                        until(lambda: sim.call("status")["generator_state"] == "ENABLED")
                    except AssertionError:
                        journal = (root / "journal.log").read_text(errors="replace").splitlines()
                        print(f"no release after {n} exposures; the daemon's last warnings:", file=sys.stderr)
                        for line in [x for x in journal if '"info"' not in x][-15:]:
                            print(line[:400], file=sys.stderr)
                        raise
                    if not sim.call("press")["fired"]:
                        raise RuntimeError("the hand switch did not fire")
                    if n == warm or n == args.exposures - 1:
                        rss.append(rss_mb(daemon.proc.pid))
                login(c, "eric")  # the console session ends after api.session_idle_s without a request
                until(lambda: len(c.get("/api/exam").json()["images"]) >= args.exposures, timeout_s=600)
                elapsed = time.monotonic() - t0
                until(lambda: len(pacs.files()) >= args.exposures, timeout_s=600)
                rss.append(rss_mb(daemon.proc.pid))
                where = rss_by_mapping(daemon.proc.pid)
        finally:
            daemon.stop()
            pacs.stop()
            sim.stop()
        journal = daemon.journal()
    kept: dict[int, float] = {}
    frame_of: dict[str, int] = {}
    sent: dict[str, float] = {}
    saved: dict[str, float] = {}
    stage_ms: dict[str, list[float]] = {}  # the daemon's own laps of each exposure, readout to saved
    for line in journal.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        msg = rec.get("msg", "")
        if m := re.match(r"read frame (\d+)$", msg):
            kept[int(m.group(1))] = rec["ts"]
        elif m := re.match(r"saved (\S+) \(frame (\d+)", msg):
            frame_of[m.group(1)] = int(m.group(2))
            saved[m.group(1)] = rec["ts"]
            if laps := re.search(r"; ms ([a-z0-9 ]+)\)", msg):
                words = laps.group(1).split()
                for stage, ms in zip(words[::2], words[1::2], strict=True):
                    stage_ms.setdefault(stage, []).append(float(ms) / 1000)
        elif m := re.match(r"sent (\S+) to pacs", msg):
            sent[m.group(1)] = rec["ts"]
    lat = sorted(sent[u] - kept[f] for u, f in frame_of.items() if u in sent and f in kept)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    to_saved = [saved[u] - kept[f] for u, f in frame_of.items() if f in kept]
    to_ack = [sent[u] - saved[u] for u in frame_of if u in sent]
    print(json.dumps({
        "exposures": args.exposures, "mode": args.mode, "ready_s": round(daemon.ready_s, 3),
        "rss_mb_ready": round(rss[0], 1), "rss_mb_warm": round(rss[1], 1), "rss_mb_last": round(rss[2], 1),
        "rss_mb_after_drain": round(rss[3], 1), "rss_growth_pct": round(100 * (rss[2] - rss[1]) / rss[1], 1),
        "exposures_per_min": round(args.exposures / elapsed * 60, 1),
        "readout_to_ack_s": {"p50": round(q[49], 3), "p95": round(q[94], 3), "max": round(lat[-1], 3),
                             "n": len(lat)},
        "readout_to_saved_s": _p50_p95(to_saved),
        "saved_to_ack_s": _p50_p95(to_ack),
        "stages_s": {k: _p50_p95(v) for k, v in stage_ms.items()},
        "rss_mb_by_mapping_after_drain": where,
        "saved": len(frame_of), "delivered": len(sent),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
