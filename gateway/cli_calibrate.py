"""`dxgate calibrate` and `dxgate qa`: the field engineer's guided steps, on the hardware directly.

When the daemon runs it holds the detector: calibration then goes through its API (the
console's job, followed here with a progress bar); QA needs the daemon stopped. Otherwise the
devices are opened through the driver registry, as the daemon would open them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import Config, load
from gateway.errors import CalibrationError, DaemonUnreachable, DxgateError

if TYPE_CHECKING:
    from gateway.calibration_workflow import CalibrationWorkflow
    from gateway.correction import CalibrationSet

COMMANDS = ("calibrate", "qa")
DEFAULT_CONFIG = Path(os.environ.get("DXGATE_CONFIG", "/etc/dxgate/dxgate.toml"))
POLL_S = 0.5  # following the daemon's calibration job


def register(sub: Any) -> None:
    """Add `calibrate` and `qa` to the CLI's subparsers."""
    cal = sub.add_parser("calibrate", help="calibrate the detector: guided dark, flat and lag frames")
    qa = sub.add_parser("qa", help="detector QA (AAPM TG-150 uniformity, defects) against the configured limits")
    for p in (cal, qa):
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"configuration (default {DEFAULT_CONFIG})")
        p.add_argument("--yes", action="store_true",
                       help="no prompts: the room is ready; a refused flat is not retaken")
        p.add_argument("--json", action="store_true", help="print the summary as JSON")
        p.add_argument("--direct", action="store_true", help="open the hardware even if a daemon socket exists")
    cal.add_argument("--operator", default=os.environ.get("USER", ""), help="who calibrates (kept in provenance)")
    cal.add_argument("--darks", type=int, help="dark frames (default: calibration.dark_frames)")
    cal.add_argument("--flats", type=int, help="flat-field frames (default: calibration.flat_frames)")
    qa.add_argument("--out", type=Path, help="also write the JSON report to this file")
    qa.add_argument("--html", type=Path, help="also write the report as one self-contained HTML page")
    qa.add_argument("--save-dicom", type=Path, metavar="DIR",
                    help="also save the QA flats in DIR as DX For Processing images (DICOM files)")


def run(args: argparse.Namespace) -> int:
    config = load(args.config)
    changes = {k: v for k, v in (("dark_frames", getattr(args, "darks", None)),
                                 ("flat_frames", getattr(args, "flats", None))) if v is not None}
    for key, n in changes.items():
        if not 2 <= n <= 256:
            raise DxgateError(f"--{key.split('_')[0]} must be 2..256, got {n}")
    if changes:
        config = config.model_copy(update={"calibration": config.calibration.model_copy(update=changes)})
    ui = _Ui(quiet=args.json, yes=args.yes)
    try:
        if not args.direct and config.api.socket:
            try:
                return _via_daemon(config, args, ui, overridden=bool(changes))
            except DaemonUnreachable:
                pass
        with _workflow(config) as workflow:
            if args.command == "qa":
                return _qa(workflow, args, ui)
            cal = workflow.calibrate(args.operator, ui.progress, prompt=ui.prompt, on_bad_frame=ui.bad_frame)
    finally:
        ui.done()
    summary = _summary(cal)
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        defects = ", ".join(f"{k} {v}" for k, v in cal.defect_counts().items())
        print(f"calibration {cal.calibration_id} stored and active\n"
              f"  frames: {summary['frames']}\n  sensitivity {cal.counts_per_ugy:.1f} counts/uGy at "
              f"{cal.temperature_c:.1f} C\n  defects: {defects}")
    return 0


def _qa(workflow: CalibrationWorkflow, args: argparse.Namespace, ui: _Ui) -> int:
    report = workflow.qa(ui.progress, prompt=ui.prompt, html_path=args.html, dicom_dir=args.save_dicom)
    doc = report.to_dict()
    if args.out is not None:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    ui.done()
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if args.json else report.to_text())
    return 0 if report.passed else 1


def _summary(cal: CalibrationSet) -> dict[str, Any]:
    prov = cal.provenance
    frames = {k: len(prov[f"{k}_frames"]) for k in ("dark", "flat", "lag")}  # type: ignore[arg-type]
    return {"calibration_id": cal.calibration_id, "detector_serial": cal.key.detector_serial,
            "mode": cal.key.mode, "counts_per_ugy": round(cal.counts_per_ugy, 3),
            "temperature_c": round(cal.temperature_c, 2), "defect_counts": cal.defect_counts(),
            "clusters": prov["clusters"], "lag_median_fraction": prov["lag_median_fraction"], "frames": frames}


@contextmanager
def _workflow(config: Config) -> Iterator[CalibrationWorkflow]:
    from gateway.alarms import Alarms
    from gateway.app import make_state_directories
    from gateway.calibration_workflow import CalibrationWorkflow
    from gateway.hardware import open_hardware
    from gateway.imaging import ImagePipeline

    make_state_directories(config)
    alarms = Alarms()
    pipeline = ImagePipeline(config, alarms=alarms)
    try:
        hardware = open_hardware(config, alarms=alarms)
        try:
            yield CalibrationWorkflow(config, hardware, pipeline)
        finally:
            hardware.close()
    finally:
        pipeline.close()


def _via_daemon(config: Config, args: argparse.Namespace, ui: _Ui, *, overridden: bool) -> int:
    from gateway.service.client import DaemonClient

    with DaemonClient(config.path(config.api.socket)) as client:
        client.get("/api/calibration")  # DaemonUnreachable when no daemon runs
        if args.command == "qa":
            raise DxgateError("the daemon holds the detector: stop it (systemctl stop dxgate) to run `dxgate qa`")
        if overridden:
            raise DxgateError("--darks/--flats apply to a direct calibration only: the daemon uses its "
                              "configuration (calibration.dark_frames, flat_frames)")
        ui.prompt("dark", "The daemon calibrates: it takes darks, then flats. " + _flat_text(config))
        client.post("/api/calibration")
        while True:
            job = client.get("/api/calibration")
            if job["total"]:
                ui.progress(job["step"], job["done"], job["total"])
            if job["state"] != "running":
                break
            time.sleep(POLL_S)
    ui.done()
    if job["state"] != "done":
        raise CalibrationError(f"the daemon's calibration failed: {job['error']}")
    sys.stdout.write(json.dumps(job, indent=2) + "\n" if args.json else
                     f"calibration {job['calibration_id']} stored and active\n")
    return 0


def _flat_text(config: Config) -> str:
    from gateway.calibration_workflow import flat_instruction

    return flat_instruction(config)


class _Ui:
    """Instructions, prompts and a progress bar on stderr (stdout keeps the summary or JSON)."""

    def __init__(self, *, quiet: bool, yes: bool) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self.yes = yes
        self.console = Console(stderr=True, quiet=quiet)
        self._bar = Progress(console=self.console, transient=False)
        self._tasks: dict[str, Any] = {}
        self._ask: Callable[[str], str] = input

    def prompt(self, step: str, text: str) -> None:
        self.console.print(f"[bold]{text}[/bold]")
        if not self.yes:
            self._pause()
            self._ask("Press Enter when ready (Ctrl-C stops): ")
            self._resume()

    def progress(self, step: str, done: int, total: int) -> None:
        if step not in self._tasks:
            if not self._tasks:
                self._bar.start()
            self._tasks[step] = self._bar.add_task(f"{step} frames", total=total)
        self._bar.update(self._tasks[step], completed=done, total=total)

    def bad_frame(self, step: str, exc: CalibrationError) -> bool:
        self.console.print(f"[red]{step} frame refused:[/red] {exc}")
        if self.yes:
            return False
        self._pause()
        answer = self._ask("Fix it and take the frame again? [Y/n] ").strip().lower()
        self._resume()
        return answer in ("", "y", "yes")

    def done(self) -> None:
        if self._tasks:
            self._bar.stop()
            self._tasks.clear()

    def _pause(self) -> None:
        if self._tasks:
            self._bar.stop()

    def _resume(self) -> None:
        if self._tasks:
            self._bar.start()

