"""The emulated SMC media changer: inventory and MOVE MEDIUM over the shared changer state.

Like a real robot it refuses what it physically cannot do, with a message saying why:
moving from an empty element, into a full one, to or from something that is not an element,
and above all taking a cartridge out of a drive that has not been unloaded (a mover bug).
"""

from __future__ import annotations

from drivers.emulated.faults import FaultWatcher, consume
from drivers.emulated.layout import TRANSPORT_ADDRESS, Description, LibraryDir
from drivers.emulated.state import read_state, write_state
from drivers.tape import (
    DriveError,
    Element,
    ElementType,
    IllegalRequestError,
    Inventory,
    MediaChanger,
)


class EmulatedChanger(MediaChanger):
    """The SMC changer of an emulated library: moves cartridges between its elements."""

    def __init__(self, lib: LibraryDir, desc: Description) -> None:
        self._lib = lib
        self._desc = desc
        self._faults = FaultWatcher(lib)

    def __repr__(self) -> str:
        return f"<EmulatedChanger {self._lib.path}>"

    def inventory(self) -> Inventory:
        state = read_state(self._lib)
        desc = self._desc
        elements = [Element(TRANSPORT_ADDRESS, ElementType.TRANSPORT, full=False)]
        serials = {d.address: d.serial for d in desc.drives}
        for address in desc.storage_addresses():
            kind = desc.element_type(address)
            assert kind is not None
            occupant = state.elements.get(address)
            elements.append(
                Element(
                    address,
                    kind,
                    full=occupant is not None,
                    barcode=occupant.barcode if occupant else None,
                    source=occupant.source if occupant and kind == ElementType.DRIVE else None,
                    identifier=serials.get(address),
                )
            )
        return Inventory(elements)

    def _describe(self, address: int) -> str:
        kind = self._desc.element_type(address)
        if kind == ElementType.DRIVE:
            return f"drive {self._desc.drive(address).name} (element {address})"
        return f"{kind} element {address}"

    def move(self, source: int, destination: int) -> None:
        desc = self._desc
        for address, role in ((source, "source"), (destination, "destination")):
            kind = desc.element_type(address)
            if kind is None:
                raise IllegalRequestError(f"changer: no element at {role} address {address}")
            if kind == ElementType.TRANSPORT:
                raise IllegalRequestError(
                    f"changer: the transport (element {address}) cannot be the {role} of a move"
                )
        for fault in self._faults.current():
            if fault.kind == "changer" and consume(self._lib, fault):
                raise DriveError(
                    f"changer: picker failure moving {source} to {destination}"
                    f" (injected fault {fault.id})",
                    alerts=(30,),
                )
        with self._lib.locked():
            state = read_state(self._lib)
            occupant = state.elements.get(source)
            if occupant is None:
                raise IllegalRequestError(
                    f"changer: cannot move from {self._describe(source)}: it is empty"
                )
            if occupant.loaded:
                raise IllegalRequestError(
                    f"changer: cannot move {occupant.barcode} out of {self._describe(source)}:"
                    " the drive has not been unloaded (call unload() on the drive first)"
                )
            if source == destination:
                return
            there = state.elements.get(destination)
            if there is not None:
                raise IllegalRequestError(
                    f"changer: cannot move {occupant.barcode} to {self._describe(destination)}:"
                    f" it is full (holds {there.barcode})"
                )
            state.elements[source] = None
            if desc.element_type(destination) == ElementType.DRIVE:
                # Remember the home slot; a drive-to-drive move keeps the original one.
                if desc.element_type(source) != ElementType.DRIVE:
                    occupant.source = source
            else:
                occupant.source = None
            state.elements[destination] = occupant
            write_state(self._lib, state)

    def initialize_element_status(self) -> None:
        """Nothing to rescan: the state file is the library's memory."""
        read_state(self._lib)
