"""The `dxgate` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gateway import __version__
from gateway.config import Config, load, to_toml
from gateway.errors import DxgateError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dxgate", description="Acquisition gateway for digital X-ray rooms.")
    parser.add_argument("--version", action="version", version=f"dxgate {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole path on the simulator and embedded peers")
    demo.add_argument("--home", type=Path, help="keep everything the run makes under this directory")
    demo.add_argument("--json", action="store_true", help="print the result as JSON")
    demo.add_argument("-n", "--exposures", type=int, default=3, help="number of exposures (default 3)")

    check = sub.add_parser("check-config", help="validate a configuration file and print it resolved")
    check.add_argument("file", type=Path)

    sub.add_parser("default-config", help="print the default configuration, documented")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            from gateway.demo import run_demo  # only the demo needs the embedded peers

            if args.exposures < 1:
                parser.error("--exposures must be at least 1")
            return run_demo(home=args.home, exposures=args.exposures, as_json=args.json, out=sys.stdout)
        if args.command == "check-config":
            sys.stdout.write(to_toml(load(args.file)))
            return 0
        if args.command == "default-config":
            sys.stdout.write(to_toml(Config()))
            return 0
    except DxgateError as exc:
        print(f"dxgate: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
