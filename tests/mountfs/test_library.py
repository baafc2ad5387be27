"""The operator's library commands on a mounted archive: inventory, export, import,
cleaning; on the emulated library and on the tgt VTL."""

from __future__ import annotations

import errno
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from drivers.emulated import inject_fault, insert_cartridge, remove_cartridge
from tests.archive import Mount, file_of, mount, tape_locations
from tests.vtl import VTL_DIR
from tests.waiting import wait_for


@pytest.fixture(params=["emulated", "scsi"])
def library_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def _vtl_module():
    spec = importlib.util.spec_from_file_location("reelfs_example_vtl", VTL_DIR / "vtl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


class Operator:
    """Hands at the mail slots, for either kind of library."""

    def __init__(self, archive: Path, make_archive: Callable) -> None:
        self.archive = archive
        self.vtl = make_archive.vtls[-1] if make_archive.vtls else None  # type: ignore[attr-defined]

    def insert(self, barcode: str, address: int) -> None:
        """A new cartridge, or one taken out before (with what it holds)."""
        if self.vtl is None:
            insert_cartridge(self.archive / "library", barcode, address=address)
        else:
            _vtl_module().operator_insert(self.vtl.directory, barcode, address, fresh=False)

    def remove(self, address: int) -> None:
        if self.vtl is None:
            remove_cartridge(self.archive / "library", address)
        else:
            _vtl_module().operator_remove(self.vtl.directory, address)


def inventory(m: Mount) -> list[dict]:
    return m.json("library", "inventory")


def mail_slots(m: Mount) -> list[dict]:
    return [e for e in inventory(m) if e["type"] == "import_export"]


def test_inventory_shows_cartridges_and_what_the_catalog_knows(mounted: Mount) -> None:
    inv = inventory(mounted)
    tapes = {e["barcode"]: e for e in inv if e["full"]}
    assert {"RF0001", "RF0002", "RF0003", "RF0004", "CLN001"} <= set(tapes)
    assert tapes["RF0001"]["type"] == "slot" and tapes["RF0001"]["volume_state"] == "blank"
    assert tapes["CLN001"]["volume_state"] == "cleaning"
    assert len([e for e in inv if e["type"] == "drive"]) == 2
    assert mail_slots(mounted)


def test_export_and_import_a_volume(make_archive: Callable, tmp_path: Path) -> None:
    archive = make_archive()
    op = Operator(archive, make_archive)
    m = mount(archive, tmp_path / "mnt")
    try:
        f = m.mnt / "away.dat"
        f.write_bytes(file_of(200_000, 1))
        m.flush(f)
        vol = tape_locations(m, f)[0].split(":")[0]
        m.release(f)
        out = m.cli("library", "export", vol, "--archive", str(archive)).stdout.decode()
        assert f"{vol} is in mail slot" in out
        vols = {v["label"]: v for v in m.json("volumes")}
        assert vols[vol]["state"] == "exported"
        slot = next(e for e in mail_slots(m) if e["barcode"] == vol)["address"]
        with pytest.raises(OSError) as e:
            f.read_bytes()
        assert e.value.errno == errno.EIO and "exported" in m.xattr(f, "error")
        op.remove(slot)  # the cartridge leaves the building ...
        op.insert(vol, slot)  # ... and comes back
        out = m.cli("library", "import", "--archive", str(archive)).stdout.decode()
        assert f"{vol}: mail slot {slot} -> slot" in out
        assert {v["label"]: v for v in m.json("volumes")}[vol]["state"] == "writable"
        assert f.read_bytes() == file_of(200_000, 1)
        # a new cartridge becomes a blank volume of the common pool
        op.insert("RF0099", slot)
        m.cli("library", "import", "--archive", str(archive))
        new = {v["label"]: v for v in m.json("volumes")}["RF0099"]
        assert new["state"] == "blank" and new["family"] is None
        p = m.cli("library", "export", "NOPE01", "--archive", str(archive), check=False)
        assert p.returncode == 1 and "unknown volume 'NOPE01'" in p.stderr.decode()
    finally:
        m.stop()


def test_cleaning_on_request_counts_uses_and_retires_the_cartridge(
    make_archive: Callable, tmp_path: Path
) -> None:
    archive = make_archive(options={"library.cleaning_uses": 2})
    m = mount(archive, tmp_path / "mnt")
    try:
        for n in (1, 2):
            m.cli("library", "clean", "drive0", "--archive", str(archive))
            wait_for(
                lambda n=n: (
                    len([e for e in m.events() if e["kind"] in ("cleaned", "cleaning_attempt")])
                    == n
                ),
                timeout=60,
                what=f"cleaning {n}",
            )
        vols = {v["label"]: v for v in m.json("volumes")}
        assert vols["CLN001"]["uses"] == 2 and vols["CLN001"]["state"] == "retired"
        assert m.events("cleaning_cartridge_retired")
        m.cli("library", "clean", "drive0", "--archive", str(archive))
        wait_for(lambda: m.events("cleaning_impossible"), timeout=60)
        # the cartridge went home every time
        assert next(e for e in inventory(m) if e["barcode"] == "CLN001")["type"] == "slot"
    finally:
        m.stop()


def test_a_drive_that_asks_is_cleaned_between_sessions(mounted: Mount) -> None:
    if (mounted.archive / "library").exists() is False:
        pytest.skip("tgt has no TapeAlert: covered by the drivers' unit tests")
    mounted.cli("drive", "down", "drive1", "--archive", str(mounted.archive))
    inject_fault(mounted.archive / "library", kind="clean", drive="drive0")
    (mounted.mnt / "x").write_bytes(b"x" * 1000)
    mounted.flush(mounted.mnt)
    wait_for(lambda: mounted.events("cleaned"), timeout=60, what="drive0 cleaned")
    (ev,) = mounted.events("cleaned")
    assert ev["subject"] == "drive0" and ev["details"]["cartridge"] == "CLN001"
    assert mounted.events("cleaning_needed")
