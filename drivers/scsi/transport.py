"""Which transport a SCSI device URL names: `open_device(url)` opens it.

`iscsi://host[:port]/<target-iqn>/<lun>` is a logical unit behind an iSCSI target
(`iscsi.IscsiDevice`), `/dev/sgN` (also `sg:///dev/sgN`) a Linux SCSI generic device
(`sg.SgDevice`). Both are `device.ScsiDevice`s, which is all the drivers above see.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drivers.scsi.device import ScsiDevice
from drivers.scsi.iscsi import IscsiDevice
from drivers.scsi.sg import SgDevice

DeviceFactory = Callable[[str], ScsiDevice]


def open_device(url: str, **options: Any) -> ScsiDevice:
    """`iscsi://host[:port]/<target-iqn>/<lun>` or `/dev/sgN` (also `sg:///dev/sgN`)."""
    if url.startswith("iscsi://"):
        return IscsiDevice(url, **options)
    if url.startswith("sg://"):
        url = url[len("sg://") :]
    if url.startswith("/dev/"):
        return SgDevice(url, **options)
    raise ValueError(f"unsupported SCSI device URL {url!r} (iscsi://... or /dev/sgN)")
