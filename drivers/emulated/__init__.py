"""The emulated tape library: SSC drives and an SMC changer on local disk, with fault injection.

A library is a directory (see man/reelfs-emulated.5): a static description, the changer
state, one tape image per cartridge and, when a test injected some, the faults. Several
processes may use one library: the changer state and the faults are shared files, so a test
can inject a fault into a running daemon, and a process killed with a tape loaded leaves it
loaded for the next one to unload.
"""

from drivers.emulated.library import (
    clear_faults,
    create_library,
    inject_fault,
    insert_cartridge,
    list_faults,
    open_library,
    remove_cartridge,
)

__all__ = [
    "clear_faults",
    "create_library",
    "inject_fault",
    "insert_cartridge",
    "list_faults",
    "open_library",
    "remove_cartridge",
]
