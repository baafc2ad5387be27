"""`reelfs import-volume`: a tape written by GNU tar and GNU cpio (newc, odc) is adopted
read-only, its files appear under a directory, are recalled and verified, and nothing is
ever written to it."""

from __future__ import annotations

import json
import os
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.archive import file_of, init_archive, mount, reelfs, tape_locations
from tests.tapes.tapetools import cartridge, new_cartridge, write_records

BARCODE = "FT0001"


def _sources(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """Three trees, tar/, newc/ and odc/, each with files, a symlink and a hard link."""
    src = tmp_path / "src"
    files: dict[str, bytes] = {}
    for n, top in enumerate(("tar", "newc", "odc")):
        (src / top / "sub" / "deep").mkdir(parents=True)
        content = {
            f"{top}/a.txt": f"hello from {top}\n".encode(),
            f"{top}/sub/b.bin": file_of(200_000 + n, n),
            f"{top}/sub/deep/empty": b"",
            f"{top}/sub/deep/{'x' * 200}": file_of(3000, 10 + n),
        }
        for name, data in content.items():
            (src / name).write_bytes(data)
        os.symlink("a.txt", src / top / "link")
        os.link(src / top / "sub" / "b.bin", src / top / "hard")
        content[f"{top}/hard"] = content[f"{top}/sub/b.bin"]
        files.update(content)
    return src, files


def _foreign_tape(archive: Path, src: Path) -> None:
    """GNU tar (10 KiB records), cpio newc and cpio odc (512-byte records), a tape file
    each, on a new cartridge left in the mail slot."""

    def run(cmd: str) -> bytes:
        return subprocess.run(cmd, shell=True, cwd=src, capture_output=True, check=True).stdout

    tar = run("tar --format=gnu -b 20 -cf - tar")
    newc = run("find newc | sort | cpio --quiet -o -H newc")
    odc = run("find odc | sort | cpio --quiet -o -H odc")
    new_cartridge(archive, BARCODE)
    with cartridge(archive, BARCODE) as drive:
        write_records(drive, tar, 10240)
        write_records(drive, newc, 512)
        write_records(drive, odc, 512)


@pytest.mark.parametrize("mounted", [True, False], ids=["through-the-daemon", "offline"])
def test_import_tar_and_cpio_tape(tmp_path: Path, mounted: bool) -> None:
    archive = init_archive(tmp_path / "a")
    src, files = _sources(tmp_path)
    _foreign_tape(archive, src)
    cmd = ("import-volume", "--archive", str(archive), "--json", BARCODE, "/imported/ft")
    m = mount(archive, tmp_path / "mnt") if mounted else None
    try:
        rep = json.loads(reelfs(*cmd).stdout)
        if m is None:
            m = mount(archive, tmp_path / "mnt")
        assert rep["data_files"] == 3 and rep["formats"] == {
            "gnu-tar": 1,
            "cpio-newc": 1,
            "cpio-odc": 1,
        }
        assert rep["symlinks"] == 3 and rep["hardlinks"] == 3
        root = m.mnt / "imported" / "ft"
        for name, data in files.items():
            assert m.state(root / name) == "released"
            assert m.xattr(root / name, "checksum.adler32") == f"{zlib.adler32(data):08x}"
        for name, data in files.items():
            assert (root / name).read_bytes() == data  # recalled from its member, verified
        for top in ("tar", "newc", "odc"):
            assert os.readlink(root / top / "link") == "a.txt"
            assert (root / top / "hard").stat().st_ino == (root / top / "sub/b.bin").stat().st_ino
        vol = {v["label"]: v for v in m.json("volumes")}[BARCODE]
        assert vol["state"] == "readonly" and vol["files"] == len(files) - 3
        # nothing is ever written to it
        new = m.mnt / "imported" / "ft" / "new.txt"
        new.write_bytes(b"written later")
        m.flush(new)
        assert not tape_locations(m, new)[0].startswith(BARCODE)
        # its data files read as they are
        listing = m.cli("tape", "read", "--archive", str(archive), BARCODE, "0").stdout
        names = subprocess.run(
            ["tar", "-tf", "-"], input=listing, capture_output=True, check=True
        ).stdout.decode()
        assert "tar/sub/b.bin" in names
        again = m.cli(*cmd, check=False)
        assert again.returncode == 1 and "already imported" in again.stderr.decode()
    finally:
        if m is not None:
            m.stop()


def test_a_volume_of_the_archive_is_not_imported(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a")
    m = mount(archive, tmp_path / "mnt")
    try:
        (m.mnt / "f").write_bytes(b"data")
        m.flush()
        p = m.cli("import-volume", "--archive", str(archive), "RF0001", "/x", check=False)
        assert p.returncode == 1 and "volume of this archive" in p.stderr.decode()
        p = m.cli("import-volume", "--archive", str(archive), "RF0002", "/f", check=False)
        assert p.returncode == 1 and "not an empty directory" in p.stderr.decode()
    finally:
        m.stop()
