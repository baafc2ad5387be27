"""The work step, one message in a worker thread: drop retries it supersedes, winnow
(the same content announced for the same path within `winnow_window` -> 304), apply its
fileOp or receive its data, run `on_file`, then report it in the same state-DB
transaction as the record of what was done. Failures go to `retry`; an archive that is
not mounted, or a subscriber that stops, leaves the message to be held (not acked).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from backend.catalog.subscriptions import SubscriptionState
from backend.replication.message import MessageError, parse_time
from backend.replication.subscribe.config import SubscribeConfig

from .blocks import BlockReceiver
from .fetch import FetchError
from .fileops import FileOps
from .files import FileReceiver
from .keys import winnow_key
from .reports import Reporter
from .retry import Retries
from .store import ArchiveStore, MountUnavailable, is_mount_gone, origin_of
from .work import Mismatch, Outcome, Result, Stats, Stopping, Work

log = logging.getLogger("reelfs.subscribe")


@dataclass
class Worker:
    """Applies one message to the archive and says how it ended (never raises)."""

    cfg: SubscribeConfig
    state: SubscriptionState
    store: ArchiveStore
    files: FileReceiver
    blocks: BlockReceiver
    fileops: FileOps
    retries: Retries
    reporter: Reporter
    stats: Stats

    def run(self, w: Work) -> Outcome:
        failed = self.retries.failed
        try:
            code, text = self._process(w)
        except MountUnavailable as exc:
            return Outcome(False, text=str(exc))
        except Stopping:
            return Outcome(False, text="stopping")
        except FetchError as exc:
            return failed(w, exc.code, str(exc), retry=exc.retry, after=exc.retry_after)
        except Mismatch as exc:
            return failed(w, 417, str(exc), retry=True)
        except MessageError as exc:
            return failed(w, 422, str(exc), retry=False)
        except OSError as exc:
            if is_mount_gone(exc) or not self.store.alive():
                return Outcome(False, text=str(exc))
            return failed(w, 499, f"{w.rel}: {exc.strerror or exc}", retry=True)
        except Exception as exc:
            log.exception("unexpected failure on %s", w.rel)
            return failed(w, 499, f"{type(exc).__name__}: {exc}", retry=True)
        if w.stored_file is not None:
            self.files.on_file(w.stored_file)  # before the report: "done" includes the trigger
        with self.state.tx():
            for update in w.finish:
                update()
            if w.retry_id is not None:
                self.state.delete_retry(w.retry_id)
            self.reporter.report(w.report_msg or w.msg, code, text)
        self.stats.add(str(code))
        log.info("%d %s: %s", code, w.rel, text)
        return Outcome(True, code, text)

    def _process(self, w: Work) -> Result:
        msg, rel = w.msg, w.rel
        dropped = self.state.supersede(list(w.paths), parse_time(msg["pubTime"]), w.retry_id)
        if dropped:
            log.info("%s: %d older message(s) waiting for a retry superseded", rel, dropped)
        key = winnow_key(msg)
        if self.state.is_duplicate(rel, key, self.cfg.winnow_window):
            return 304, "duplicate suppressed (winnow)"
        origin = origin_of(msg, self.cfg.cluster, self.cfg.post_exchange, self.cfg.post_base_url)
        result = self.fileops.apply(w, origin)
        if result is None:
            receiver = self.blocks if "blocks" in msg else self.files
            result = receiver.receive(w, origin)
        w.finish.append(lambda: self.state.remember(rel, key))
        return result
