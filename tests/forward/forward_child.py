"""Child process for the forwarding chaos runs: forwards a spool's backlog to one archive,
printing `sent <uid>` for every delivery the archive acknowledged, `done` once none is left.

Run as `python -m tests.forward.forward_child <spool dir> <database> <port> <called AE>`.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from gateway.config import DestinationConfig
from gateway.forward import DeliveryResult, Forwarder, Outcome
from gateway.netopts import configure_pynetdicom
from gateway.spool import Spool


def main() -> None:
    root, db, port, aet = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    configure_pynetdicom()
    spool = Spool(root, db, min_free_bytes=0)
    fwd = Forwarder(spool, [DestinationConfig(name="archive", host="127.0.0.1", port=port, called_ae=aet,
                                              timeout_s=30.0)],
                    calling_ae="DXGATE", backoff_base_s=0.2, backoff_max_s=2.0, batch_size=250)

    def report(result: DeliveryResult) -> None:
        print(f"{result.outcome.value} {result.uid}", flush=True)

    fwd.on_result = report
    print("ready", flush=True)
    idle = threading.Event()
    while True:
        fwd.forward_due()
        counts = spool.counts()
        if counts["pending"] == 0 and counts["sending"] == 0:
            break
        due = spool.next_attempt_at("archive")
        idle.wait(2.0 if due is None else min(2.0, max(0.0, due - time.time())))  # a backoff the archive asked for
    print(f"done {Outcome.SENT.value}={counts['sent']} quarantined={counts['quarantined']}", flush=True)
    spool.close()


if __name__ == "__main__":
    main()
