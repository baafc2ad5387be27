"""A standalone outbox publisher process, for the kill -9 test: DB URL CREDENTIALS BATCH."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from backend.replication.credentials import Credentials
from backend.replication.outbox import Publisher


def main() -> None:
    db, url, creds, batch = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pub = Publisher(db, url, credentials=Credentials.load(creds), batch_size=int(batch))
    pub.run(stop)


if __name__ == "__main__":
    main()
