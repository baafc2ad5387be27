"""On-tape formats: what reelfs writes on a cartridge and how it reads it (and others') back.

* `pax`: reelfs data files, POSIX.1-2001 pax archives in fixed-size records that GNU tar
  reads as they are (`TapeFileWriter`, `read_member`, `iter_members`).
* `ansi`: ANSI X3.27 VOL1/HDR/EOF labels for labelled (AUL) tapes.
* `cpio`, `foreign`: read-only access to tape files written by others (tar of any flavour,
  cpio odc/newc/crc), and `foreign.sniff` to tell what a tape file holds.

man/reelfs-tape.5 describes the layout on tape. Nothing here knows the catalog: callers pass
names, sizes and `REELFS.*` records in and get them back.
"""
