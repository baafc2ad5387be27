"""ANSI labels: the layout the mover writes, VOL1 checked at every mount, volumes refused."""

from __future__ import annotations

import errno
import io
import tarfile
import tomllib
from pathlib import Path

import pytest

from drivers.formats.ansi import Vol1, check_trailer, read_header, read_trailer, write_vol1
from tests.archive import file_of, init_archive, mount, reelfs, tape_locations
from tests.tapes.tapetools import cartridge, read_tape_file, write_records


def archive_id(archive: Path) -> str:
    return tomllib.loads((archive / "reelfs.toml").read_text())["archive"]["id"]


def test_labelled_volume_has_the_aul_layout_and_locations_point_at_the_data(
    tmp_path: Path,
) -> None:
    archive = init_archive(
        tmp_path / "a",
        extra=["--label-format", "ansi"],
        options={"aggregation.threshold": "1MiB"},
    )
    m = mount(archive, tmp_path / "mnt")
    try:
        d = m.mnt / "d"
        d.mkdir()
        small = {d / f"s{i}": file_of(5000 + 700 * i, i) for i in range(5)}
        for p, data in small.items():
            p.write_bytes(data)
        big = m.mnt / "big"
        big.write_bytes(file_of(1_500_000, 99))
        m.flush()
        locs = {p: tape_locations(m, p)[0].split(":") for p in [*small, big]}
        vol = {v["label"]: v for v in m.json("volumes")}["RF0001"]
        m.umount()
    finally:
        m.stop()
    # the small files share data file 0, the large one has data file 1
    assert {loc[0] for loc in locs.values()} == {"RF0001"}
    assert {loc[1] for p, loc in locs.items() if p in small} == {"0"}
    assert locs[big][1] == "1"
    assert vol["next_fileno"] == 2
    with cartridge(archive, "RF0001") as drive:
        drive.rewind()
        vol1 = Vol1.parse(drive.read_block(80))
        assert (vol1.volser, vol1.owner) == ("RF0001", archive_id(archive))
        hdr = read_header(drive)  # HDR1 HDR2 share tape file 0 with VOL1
        assert hdr.label1.file_sequence == 1 and hdr.label2.block_length == 256 * 1024
        assert drive.read_position().block == 4
        assert int(locs[d / "s0"][2]) == 4  # user.reelfs.location: the data, not the labels
        data = read_tape_file(drive)
        trailer = read_trailer(drive)
        check_trailer(hdr, trailer, len(data))
        assert trailer.label2.block_count == len(data)
        hdr2 = read_header(drive)
        assert hdr2.label1.file_sequence == 2
        assert drive.read_position().block == int(locs[big][2])
        big_records = read_tape_file(drive)
        check_trailer(hdr2, read_trailer(drive), len(big_records))
        assert drive.read_position().block == vol["eod_block"]  # the catalog's end of data
    with tarfile.open(fileobj=io.BytesIO(b"".join(data))) as tf:
        members = {mi.name: tf.extractfile(mi).read() for mi in tf}  # type: ignore[union-attr]
    assert members == {str(p.relative_to(m.mnt)): v for p, v in small.items()}


def test_a_volume_whose_label_does_not_match_is_refused(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a", extra=["--label-format", "ansi"])
    m = mount(archive, tmp_path / "mnt")
    try:
        a = m.mnt / "a.dat"
        a.write_bytes(file_of(100_000, 1))
        m.flush(a)
        assert tape_locations(m, a)[0].startswith("RF0001:")
        m.release(a)
        m.umount()
    finally:
        m.stop()
    # someone relabels the cartridge (and so erases it)
    with cartridge(archive, "RF0001") as drive:
        write_vol1(drive, "XX0001")
    m = mount(archive, tmp_path / "mnt")
    try:
        b = m.mnt / "b.dat"
        b.write_bytes(file_of(50_000, 2))
        m.flush(b)  # the mover mounts RF0001 (the family's volume), refuses it, goes on
        assert tape_locations(m, b)[0].startswith("RF0002:")
        vols = {v["label"]: v for v in m.json("volumes")}
        assert vols["RF0001"]["state"] == "noaccess"
        assert "XX0001" in vols["RF0001"]["error"] and "RF0001" in vols["RF0001"]["error"]
        (event,) = m.events("label_mismatch")
        assert event["subject"] == "RF0001"
        with pytest.raises(OSError) as e:
            a.read_bytes()  # its only copy is on the refused volume
        assert e.value.errno == errno.EIO
        assert "RF0001 noaccess" in m.xattr(a, "error")
    finally:
        m.stop()


def test_a_blank_volume_holding_data_is_not_overwritten(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a")  # unlabelled: the check is about blankness
    src = tmp_path / "src"
    src.mkdir()
    (src / "precious").write_bytes(file_of(30_000, 5))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(src / "precious", arcname="precious")
    with cartridge(archive, "RF0001") as drive:  # the catalog has RF0001 blank
        write_records(drive, buf.getvalue(), 10240)
    m = mount(archive, tmp_path / "mnt")
    try:
        f = m.mnt / "f"
        f.write_bytes(b"new data")
        m.flush(f)
        assert tape_locations(m, f)[0].startswith("RF0002:")
        vols = {v["label"]: v for v in m.json("volumes")}
        assert vols["RF0001"]["state"] == "noaccess"
        assert "not overwriting" in vols["RF0001"]["error"]
        m.umount()
    finally:
        m.stop()
    listing = reelfs("tape", "read", "--archive", str(archive), "RF0001", "0").stdout
    with tarfile.open(fileobj=io.BytesIO(listing)) as tf:
        assert tf.extractfile("precious").read() == file_of(30_000, 5)  # type: ignore[union-attr]
