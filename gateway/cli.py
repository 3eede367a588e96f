"""The `dxgate` command line.

Every failure a user can cause (a missing or broken file, a directory given as a file, a
read-only state directory, a home that is a file) ends with one line naming the problem on
stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import __version__, cli_calibrate
from gateway.config import Config, check_state_dir, load, to_toml
from gateway.errors import DaemonUnreachable, DxgateError

if TYPE_CHECKING:
    from gateway.service.client import DaemonClient

DEFAULT_CONFIG = Path(os.environ.get("DXGATE_CONFIG", "/etc/dxgate/dxgate.toml"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dxgate", description="Acquisition gateway for digital X-ray rooms.")
    parser.add_argument("--version", action="version", version=f"dxgate {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole path on the simulator and embedded peers")
    demo.add_argument("--home", type=Path, help="keep everything the run makes under this directory")
    demo.add_argument("--json", action="store_true", help="print the result as JSON")
    demo.add_argument("-n", "--exposures", type=int, default=3, help="number of exposures (default 3)")
    demo.add_argument("--once", action="store_true",
                      help="exit after the exposures (default: then serve the console until Ctrl-C)")
    demo.add_argument("--port", type=int, default=0, help="the console's port (default: any free port)")

    check = sub.add_parser("check-config", help="validate a configuration file and print it resolved")
    check.add_argument("file", type=Path)

    sub.add_parser("default-config", help="print the default configuration, documented")

    reprocess = sub.add_parser("reprocess", help="make the images of raw frames kept after a failure")
    reprocess.add_argument("--config", type=Path, required=True, help="the gateway's configuration file")
    reprocess.add_argument("--list", action="store_true", help="only list the kept frames and why they wait")
    reprocess.add_argument("--json", action="store_true", help="print the result as JSON")
    reprocess.add_argument("ids", nargs="*", help="kept frame ids (default: all)")

    status = sub.add_parser("status", help="what the running daemon is doing (through its API socket)")
    status.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"configuration (default {DEFAULT_CONFIG})")
    status.add_argument("--json", action="store_true", help="print JSON")

    queue = sub.add_parser("queue", help="the delivery queue, through the running daemon (or --offline)")
    queue.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"configuration (default {DEFAULT_CONFIG})")
    queue.add_argument("action", choices=("list", "show", "retry", "release", "purge"))
    queue.add_argument("uid", nargs="?", default="", help="SOP Instance UID (show, retry, release, purge)")
    queue.add_argument("--reason", default="", help="purge: why the delivery is given up (kept with it)")
    queue.add_argument("--state", help="list only this state (pending, sent, quarantined, ...)")
    queue.add_argument("--destination", help="only this destination")
    queue.add_argument("--limit", type=int, default=100)
    queue.add_argument("--json", action="store_true", help="print JSON")
    queue.add_argument("--offline", action="store_true",
                       help="act on the state directory directly, when the daemon is not running")

    run = sub.add_parser("run", help="run the gateway as a service (systemd Type=notify)")
    run.add_argument("--config", type=Path, required=True, help="the gateway's configuration file")

    user = sub.add_parser("user", help="manage console users (roles: technologist, engineer, admin)")
    user.add_argument("--config", type=Path, required=True, help="the gateway's configuration file")
    user.add_argument("action", choices=("add", "passwd", "disable", "enable", "list"))
    user.add_argument("name", nargs="?", default="")
    user.add_argument("--role", default="technologist", choices=("technologist", "engineer", "admin"))
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    cli_calibrate.register(sub)
    sim = sub.add_parser("sim", help="the hardware simulator process and its control (python -m hw_sim)",
                         add_help=False)
    sim.add_argument("sim_args", nargs=argparse.REMAINDER, help="arguments for hw_sim: --dir DIR, or ctl ...")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(parser, args)
    except DaemonUnreachable as exc:
        print(f"dxgate: {exc}", file=sys.stderr)
        return 3
    except DxgateError as exc:
        print(f"dxgate: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave: a directory for a file, a read-only disk, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"dxgate: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


def _serve_demo_console(config_path: Path, usb_backend: Any, on_ready: Callable[[Any], None]) -> int:
    """`dxgate demo`'s console: the daemon in this process, on the demo's simulator (gateway.demo
    sits below gateway.service, so the daemon is handed to it from here)."""
    from gateway.service.daemon import Daemon

    return Daemon(config_path, usb_backend=usb_backend, on_ready=on_ready).run()


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "sim":
        # A separate program, run in its place: the gateway never imports the simulator.
        os.execv(sys.executable, [sys.executable, "-m", "hw_sim", *args.sim_args])
    if args.command == "demo":
        from gateway.demo import run_demo  # only the demo needs the embedded peers

        if args.exposures < 1:
            parser.error("--exposures must be at least 1")
        if args.home is not None and args.home.exists() and not args.home.is_dir():
            raise DxgateError(f"--home {args.home} is not a directory")
        if not 0 <= args.port <= 65535:
            parser.error("--port must be 0-65535")
        serve = None if args.once or args.json else _serve_demo_console  # --json: the summary is the output
        try:
            return run_demo(home=args.home, exposures=args.exposures, as_json=args.json, out=sys.stdout,
                            serve=serve, api_port=args.port)
        except KeyboardInterrupt:  # Ctrl-C before the console is up: everything is stopped already
            print("dxgate: demo interrupted", file=sys.stderr)
            return 130
    if args.command == "check-config":
        cfg = load(args.file)
        check_state_dir(cfg)
        sys.stdout.write(to_toml(cfg))
        return 0
    if args.command == "default-config":
        sys.stdout.write(to_toml(Config()))
        return 0
    if args.command == "reprocess":
        return _reprocess(args)
    if args.command == "run":
        from gateway.service.daemon import Daemon, configure_logging
        from gateway.service.memory import tune_malloc

        tune_malloc()  # before the first frame-sized buffer
        configure_logging()
        return Daemon(args.config).run()
    if args.command == "user":
        return _user(args)
    if args.command == "queue":
        return _queue_offline(args) if args.offline else _queue(args)
    if args.command == "status":
        return _status(args)
    if args.command in cli_calibrate.COMMANDS:
        return cli_calibrate.run(args)
    parser.error(f"unknown command {args.command}")
    return 2


def _client(args: argparse.Namespace) -> DaemonClient:
    from gateway.service.client import DaemonClient

    cfg = load(args.config)
    if not cfg.api.socket:
        raise DxgateError(f"{args.config}: api.socket is empty, so the daemon offers no socket for commands")
    return DaemonClient(cfg.path(cfg.api.socket))


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        st = client.get("/api/status")
    if args.json:
        json.dump(st, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    det, cal, wl = st["detector"], st["calibration"], st["worklist"]
    temp = st.get("detector_temperature_c")
    print(f"detector     {det['model']} {det['serial']} (firmware {det['firmware']}), mode {det['mode']}, "
          f"{det['state']}" + (f", {temp:.1f} °C" if temp is not None else ""))
    age = cal["age_s"]
    print(f"calibration  {cal['state']}" + (f", {cal['calibration_id']}, {_age(age)} old" if age is not None else ""))
    if wl is None:
        print("worklist     not yet queried")
    else:
        print(f"worklist     {wl['items']} item(s) from {wl['source']}, as of {wl['as_of'] or 'never'}"
              + (f" ({wl['error']})" if wl["error"] else ""))
    by_dest: dict[str, list[str]] = {}
    for q in st["queue"]:
        by_dest.setdefault(q["destination"], []).append(f"{q['state']} {q['count']}")
    for dest, parts in sorted(by_dest.items()) or [("(empty)", [])]:
        print(f"queue        {dest}: {', '.join(parts)}")
    print(f"disk free    {st['disk_free_bytes'] / 1e9:.1f} GB")
    print(f"kept frames  {st['kept_frames']}" + ("  (waiting for `dxgate reprocess`)" if st["kept_frames"] else ""))
    stages = ", ".join(f"{k} {v:.1f} s ago" for k, v in sorted(st.get("stages", {}).items()))
    stale = st.get("stale") or []
    print(f"stages       {stages}" + (f"  STALE: {', '.join(stale)}" if stale else ""))
    for a in st["alarms"]:
        print(f"ALARM        [{a['severity']}] {a['code']}: {a['message']}")
    if not st["alarms"]:
        print("alarms       none")
    return 1 if st["alarms"] or stale else 0


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _queue(args: argparse.Namespace) -> int:
    """Through the running daemon, so its forwarder acts on a retry or release at once."""
    with _client(args) as client:
        if args.action == "list":
            rows = client.get("/api/queue", state=args.state, destination=args.destination, limit=args.limit)
        elif not args.uid:
            raise DxgateError(f"queue {args.action}: give the SOP Instance UID")
        elif args.action == "show":
            rows = client.get(f"/api/queue/{args.uid}")
        elif args.action == "purge":
            rows = client.post(f"/api/queue/{args.uid}/purge", destination=args.destination, reason=_reason(args))
        else:
            rows = client.post(f"/api/queue/{args.uid}/{args.action}", destination=args.destination)
    _print_deliveries(rows, args.json)
    return 0


def _reason(args: argparse.Namespace) -> str:
    if not args.reason.strip():
        raise DxgateError("queue purge: say why with --reason (it is kept with the delivery)")
    return str(args.reason.strip())


def _print_deliveries(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for d in rows:
        status = "" if d.get("last_status") is None else f" 0x{d['last_status']:04X}"
        state = "held for review" if d.get("held") else d["state"]
        print(f"{d['sop_instance_uid']}  {d['destination']}  {state}  attempts {d['attempts']}{status}"
              f"{'  ' + d['last_error'] if d.get('last_error') else ''}")
    print(f"{len(rows)} deliver{'y' if len(rows) == 1 else 'ies'}")


def _queue_offline(args: argparse.Namespace) -> int:
    """On the state database directly (a running daemon sees the changes at its next pass)."""
    from gateway.api.models import delivery_json
    from gateway.spool import Spool

    cfg = load(args.config)
    db = cfg.path(cfg.spool.database)
    if not db.exists():
        raise DxgateError(f"no state database at {db}: nothing was ever spooled with this configuration")
    spool = Spool(cfg.path(cfg.spool.directory), db, min_free_bytes=0, busy_timeout_s=cfg.spool.db_busy_timeout_s)
    try:
        if args.action == "list":
            rows = spool.listing(state=args.state, destination=args.destination, limit=args.limit)
        else:
            if not args.uid:
                raise DxgateError(f"queue {args.action}: give the SOP Instance UID")
            rows = [d for d in spool.deliveries(args.uid) if not args.destination or d.destination == args.destination]
            if not rows:
                raise DxgateError(f"no delivery of {args.uid} in the queue")
            wanted = {"retry": "pending", "release": "quarantined", "purge": "quarantined"}.get(args.action)
            if wanted is not None:
                todo = [d for d in rows if d.state.value == wanted]
                if not todo:
                    raise DxgateError(f"queue {args.action}: no {wanted} delivery of {args.uid}")
                why = _reason(args) if args.action == "purge" else ""
                for d in todo:
                    if args.action == "purge":
                        spool.purge(d.sop_instance_uid, d.destination, why)
                    else:
                        (spool.retry_now if args.action == "retry" else spool.release)(d.sop_instance_uid,
                                                                                       d.destination)
                rows = spool.deliveries(args.uid)
        shown = [delivery_json(d, spool.now()) for d in rows]
    finally:
        spool.close()
    _print_deliveries(shown, args.json)
    return 0


def _user(args: argparse.Namespace) -> int:
    import getpass

    from gateway.users import UserStore

    cfg = load(args.config)
    check_state_dir(cfg)
    if args.action != "list" and not args.name:
        raise DxgateError(f"user {args.action}: give the user name")
    api = cfg.api
    Path(cfg.state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    store = UserStore(cfg.path(cfg.spool.database), lockout_attempts=api.lockout_attempts, lockout_s=api.lockout_s,
                      min_password_length=api.min_password_length)
    try:
        if args.action == "list":
            for u in store.list():
                print(f"{u.name}  {u.role}{'  (disabled)' if u.disabled else ''}")
            return 0
        if args.action in ("disable", "enable"):
            store.set_disabled(args.name, args.action == "disable")
            _audit_user_change(cfg, f"user {args.name} {args.action}d", roles=False)
            print(f"user {args.name} {args.action}d")
            return 0
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
        if args.action == "add":
            store.add(args.name, args.role, password)
            _audit_user_change(cfg, f"user {args.name} added with role {args.role}", roles=True)
            print(f"user {args.name} added ({args.role})")
        else:
            store.set_password(args.name, password)
            _audit_user_change(cfg, f"password of user {args.name} changed", roles=False)
            print(f"password of {args.name} changed")
        return 0
    finally:
        store.close()


def _audit_user_change(cfg: Config, what: str, *, roles: bool) -> None:
    """Kept in the audit trail of the state database; a running daemon's sender (or the next
    one to start) delivers it to the collector. `who` is the operating-system account."""
    import getpass
    from datetime import UTC, datetime

    from gateway.audit import AuditTrail, Outcome
    from gateway.audit import messages as audit_msg

    trail = AuditTrail(cfg.path(cfg.spool.database), source_id=cfg.site.ae_title, site=cfg.site.institution_name,
                       busy_timeout_s=cfg.spool.db_busy_timeout_s)
    try:
        kind = audit_msg.SECURITY_ROLES_CHANGED if roles else audit_msg.USER_SECURITY_ATTRIBUTES_CHANGED
        who = f"os:{getpass.getuser()}"
        trail.record(audit_msg.security_alert(kind, who=who, outcome=Outcome.SUCCESS, when=datetime.now(UTC),
                                              description=f"{what} (dxgate user, command line)"), who)
    finally:
        trail.close()


def _reprocess(args: argparse.Namespace) -> int:
    """Hardware-free: the kept records carry everything their image needs."""
    from gateway.alarms import Alarms
    from gateway.imaging import ImagePipeline

    cfg = load(args.config)
    check_state_dir(cfg)
    pipeline = ImagePipeline(cfg, alarms=Alarms())
    try:
        if args.list:
            kept = pipeline.raw_store.pending()
            if args.json:
                json.dump([{**asdict(k), "path": str(k.path)} for k in kept], sys.stdout, indent=2)
                sys.stdout.write("\n")
            else:
                for k in kept:
                    print(f"{k.kept_id}  frame {k.frame_number}  kept {k.kept_at}  {k.reason or '(no failure noted)'}")
                print(f"{len(kept)} kept frame(s) waiting for their image")
            return 0
        results = pipeline.reprocess(args.ids or None)
    finally:
        pipeline.close()
    if args.json:
        json.dump([asdict(r) for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for r in results:
            print(f"{r.kept_id}  {r.outcome}  {r.sop_instance_uid}  {r.error}".rstrip())
        print(f"{sum(r.outcome != 'failed' for r in results)} of {len(results)} kept frame(s) imaged")
    return 0 if all(r.outcome != "failed" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
