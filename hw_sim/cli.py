"""Command line of the simulator: run it (`python -m hw_sim --dir DIR`, or `dxgate-sim --dir DIR`)
or drive a running one through its control socket (`python -m hw_sim ctl --dir DIR press`).

ctl commands: press, status, pulses, place SCENE, temperature C, collimate (--mm L T R B |
--fractions L T R B | --open), truth [--mode M], unplug, plug, and `call OP [KEY=VALUE ...]`
for any other control operation (values parsed as JSON when they can be: n=2, hung=false).
Each prints the simulator's reply as one JSON line; a refusal exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hw_sim import process
from hw_sim.control import SimControl


def _fields(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    cmd = args.command
    if cmd == "place":
        return "place", {"scene": args.scene}
    if cmd == "temperature":
        return "temperature", {"celsius": args.celsius}
    if cmd == "collimate":
        if args.mm:
            return "collimate", {"field_mm": args.mm}
        if args.fractions:
            return "collimate", {"fractions": args.fractions}
        return "collimate", {}
    if cmd == "truth":
        return "truth", {} if args.mode is None else {"mode": args.mode}
    if cmd == "call":
        return args.op, _fields(args.fields)
    return cmd, {}


def ctl_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hw_sim ctl", description="drive a running simulator")
    ap.add_argument("--dir", required=True, type=Path, help="the simulator's --dir (holds sim.json)")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, text in (("press", "the hand switch: prepare and expose"), ("status", "counters and state"),
                       ("pulses", "the X-ray pulses delivered"), ("unplug", "pull the panel's cable"),
                       ("plug", "plug it back")):
        sub.add_parser(name, help=text)
    sub.add_parser("place", help="put a scene in the beam").add_argument(
        "scene", help="open, chest, hand or qc")
    sub.add_parser("temperature", help="the panel's temperature").add_argument("celsius", type=float)
    col = sub.add_parser("collimate", help="the collimated field (default: open to the whole panel)")
    how = col.add_mutually_exclusive_group()
    how.add_argument("--mm", nargs=4, type=float, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"),
                     help="in mm from the panel's top-left corner")
    how.add_argument("--fractions", nargs=4, type=float, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"),
                     help="as fractions of the panel's side")
    how.add_argument("--open", action="store_true", help="the whole panel")
    sub.add_parser("truth", help="the scene's ground truth in a mode's pixels").add_argument("--mode")
    call = sub.add_parser("call", help="any control operation (faults: see hw_sim/control.py)")
    call.add_argument("op")
    call.add_argument("fields", nargs="*", metavar="KEY=VALUE")
    return ap


def ctl(argv: list[str]) -> int:
    args = ctl_parser().parse_args(argv)
    info_path = args.dir / "sim.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        print(f"no simulator running in {args.dir} (no readable sim.json)", file=sys.stderr)
        return 1
    op, fields = _request(args)
    try:
        with SimControl(info["control_socket"], timeout_s=30.0) as control:
            reply = control.call(op, **fields)
    except (OSError, RuntimeError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(json.dumps(reply))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`ctl ...` drives a running simulator; anything else runs one (hw_sim.process)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["ctl"]:
        return ctl(args[1:])
    return process.main(args)
