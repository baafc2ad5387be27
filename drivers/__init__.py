"""Tape drives, media changers and on-tape formats; nothing here knows the catalog.

`drivers.tape` holds the interfaces every driver implements, `drivers.library` opens the
library an archive's `[library]` table describes (`drivers.emulated` or `drivers.scsi`),
`drivers.formats` knows the bytes on tape.
"""
