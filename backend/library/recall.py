"""Queueing recalls: pick the copy to read and put the request in the queue.

Shared by the mount (open of a released file), the CLI (`reelfs recall`) and the HTTP
data service; the library manager orders what is queued by volume and tape position.
The first good copy on a readable volume is read, one on a `suspect` volume last; the
mover goes on to the next copy when one fails (backend.mover).
"""

from __future__ import annotations

from backend.catalog.db import Catalog
from backend.catalog.files import RELEASED, FileClerk
from backend.catalog.queue import RequestQueue
from backend.catalog.volumes import READABLE, SUSPECT, VolumeClerk
from backend.errors import ArchiveError


def queue_recall(cat: Catalog, archive_id: str, bitfile: int, *, urgent: bool = True) -> bool:
    """Queue a recall of `bitfile` unless one is queued; True if the file needs one at all.

    Raises ArchiveError when no copy can be read (the reason is also stored on the file).
    """
    files = FileClerk(cat, archive_id)
    with cat.tx():
        bf = files.get(bitfile)
        if bf is None or bf.state != RELEASED:
            return False
        vc = VolumeClerk(cat)
        copies = files.copies(bitfile)
        states = {c.volume: getattr(vc.get(c.volume), "state", None) for c in copies}
        # a copy on a volume that gave a media error is read last, when it is the only one
        for c in sorted(copies, key=lambda c: states[c.volume] == SUSPECT):
            if states[c.volume] in READABLE:
                RequestQueue(cat).enqueue_recall(
                    bitfile, c.volume, c.fileno, c.block + c.record, urgent=urgent
                )
                cat.execute("UPDATE bitfiles SET error=NULL WHERE id=?", (bitfile,))
                return True
        bad = cat.all(
            "SELECT volume, fileno, block + record FROM tape_copies WHERE bitfile=? "
            "AND state='bad'",
            (bitfile,),
        )
        if copies:
            where = ", ".join(f"{c.volume} {states[c.volume] or 'unknown'}" for c in copies)
            why = f"recall failed: no readable copy ({where})"
        elif bad:
            where = ", ".join(f"{v}:{f}:{b}" for v, f, b in bad)
            why = f"recall failed: no good copy left ({len(bad)} bad: {where})"
        else:
            why = "recall failed: no tape copy recorded"
        cat.execute("UPDATE bitfiles SET error=? WHERE id=?", (why, bitfile))
    raise ArchiveError(why)
