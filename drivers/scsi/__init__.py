"""Real tape hardware: SSC tape drives and SMC media changers over iSCSI or Linux SG_IO.

`open_library(changer_url, drive_urls, drive_elements=None)` is what
`drivers.library.open_library` calls for `[library] type = "scsi"`. Device URLs are
`iscsi://host[:port]/<target-iqn>/<lun>` or `/dev/sgN`, optionally followed by
`?quirks=tgt|standard`.

Layout: `device` (transport-neutral command runner), `iscsi` and `sg` (transports),
`transport` (which transport a device URL names), `cdb`
(CDB builders), `commands` (PyScsi's command classes), `sense`, `classify`, `tapealert`,
`logpages`, `modepages`, `position`, `elements` (decoders), `identity` and `quirks`,
`drive` (`ScsiTapeDrive`, combining `drive_plumbing`, `drive_positioning`, `drive_transfer`
and `drive_health`) with `emulation` (tgt's positioning workarounds), `changer`
(`ScsiMediaChanger`), `library` (wiring).
"""

from __future__ import annotations

from drivers.scsi.changer import ScsiMediaChanger
from drivers.scsi.drive import CleaningResult, ScsiTapeDrive
from drivers.scsi.library import (
    LibraryMappingError,
    clean_drive,
    open_changer,
    open_drive,
    open_library,
    return_cartridges,
)

__all__ = [
    "CleaningResult",
    "LibraryMappingError",
    "ScsiMediaChanger",
    "ScsiTapeDrive",
    "clean_drive",
    "open_changer",
    "open_drive",
    "open_library",
    "return_cartridges",
]
