"""Rebuilding the catalog from the tapes alone: `reelfs rebuild-catalog --from-tapes`.

Every volume in the library is read (labels, pax headers, the `REELFS.*` records of every
member; the data is spaced over, not read) and a new catalog is made from what is found:

* volumes: layout (VOL1 or none), block size, end of data, data files, bytes, family
  (the pool of the copies it holds: `FAMILY#k` for copy k >= 2, backend.catalog.pools);
* bitfiles: one per `REELFS.bfid` of this archive, with its bfid (and so its id) kept.
  A bfid met more than once with different data (a file changed while it was being
  written, whose first copy the mover then discarded) keeps the data with the newest
  mtime; every place that data is on tape becomes one of its tape copies (copy 1, 2...
  in the order of their `REELFS.copy`, then of volumes), the other places deleted copies;
* the namespace: each bitfile's `REELFS.path`; of several bitfiles with one path the
  newest (highest id: created last) wins, the others are kept as deleted versions.
  Directories are created as needed (mode 755, owned by whoever rebuilds); a directory
  whose files all belong to one family gets it as `user.reelfs.file_family`.

Only what a mover committed counts: a data file cut short by a crash (no filemark, or
on a labelled volume no trailer labels) is left out, and the volume's end of data is
put before it, as the lost catalog had it.

What the tapes cannot tell is lost with the catalog: renames and deletions made after a
file was written (it comes back under its old path), empty directories, directory
modes, policy xattrs other than the family, files never written to tape. Cache files of
rebuilt files are kept when their checksums match (the file is then `archived`); any
other cache file is moved to ARCHIVE/lost+found, never deleted.

The new catalog is written beside the old one and renamed into place at the end; an
existing catalog is kept as `catalog.db.before-rebuild.TIME` (and only replaced with
`--force`).

Modules: `scan` reads one volume (what a reelfs volume says, member by member), `build`
scans them all and writes the new catalog (backend.catalog.rebuild).
"""

from backend.tape.rebuild.build import RebuildReport, rebuild

__all__ = ["RebuildReport", "rebuild"]
