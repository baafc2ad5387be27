"""Names are bytes end to end: a file named with any byte but `/` (and NUL, which no
name can hold) is written to tape, released, recalled, renamed, shown by `reelfs info`,
listed by GNU tar, rebuilt from tape and imported, with the very bytes it was given; and
a tape file's member the catalog cannot record fails alone."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path

from backend.catalog import events, open_catalog
from backend.catalog.commit import TapeFileEnd, WrittenMember, commit_tape_file
from backend.catalog.files import FileClerk
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RequestQueue
from backend.catalog.schema import ROOT_INODE
from backend.catalog.volumes import VolumeClerk
from backend.names import from_db, printable, to_bytes, to_db
from backend.replication.message import topic_for
from tests.archive import init_archive, mount, reelfs, tape_locations
from tests.tapes.tapetools import cartridge, new_cartridge, write_records

#: every byte a name may hold, one file per byte
BYTES = [b for b in range(1, 256) if b != 0x2F]


def name_of(b: int, prefix: bytes = b"n") -> bytes:
    return prefix + bytes([b]) + b"\xff"  # \xff: never UTF-8 whatever the byte before


def data_of(b: int) -> bytes:
    return f"file of byte {b:02x}\n".encode()


def write_all(d: bytes) -> None:
    os.mkdir(d)
    for b in BYTES:
        with open(d + b"/" + name_of(b), "wb") as f:
            f.write(data_of(b))


def read_all(d: bytes, prefix: bytes = b"n") -> dict[bytes, bytes]:
    """Every file of `d` by name; fails unless the names are exactly the expected ones."""
    assert sorted(os.listdir(d)) == sorted(name_of(b, prefix) for b in BYTES)
    out = {}
    for b in BYTES:
        with open(d + b"/" + name_of(b, prefix), "rb") as f:
            out[name_of(b, prefix)] = f.read()
        assert out[name_of(b, prefix)] == data_of(b), hex(b)
    return out


def test_every_byte_through_tape_info_rename_and_rebuild(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a", volumes=2, volume_size="16MiB")
    m = mount(archive, tmp_path / "mnt")
    d = os.fsencode(m.mnt) + b"/names"
    try:
        write_all(d)
        innocent = m.mnt / "plain.txt"
        innocent.write_bytes(b"an ordinary name\n")
        # the queue of writes names them: --json exact, the table escaped
        queued = {base64.b64decode(r["path_b64"]) for r in m.json("queue", "--all")}
        assert queued >= {b"/names/" + name_of(b) for b in BYTES}
        table = m.cli("queue", "--all", "--archive", str(archive)).stdout
        table.decode("utf-8")
        assert not any((c < 0x20 and c != 0x0A) or c == 0x7F for c in table), "raw control byte"
        m.flush(timeout=90)  # before: the mover's commit failed, every drive went down
        assert m.state(innocent) == "archived"
        paths = [d + b"/" + name_of(b) for b in BYTES]
        for p in paths:
            assert os.getxattr(p, "user.reelfs.state") == b"archived", p

        # reelfs info: --json exact (\udcNN and base64), the table never raw
        arg = [os.fsdecode(p) for p in paths]
        infos = m.json("info", *arg)
        for p, info in zip(paths, infos, strict=True):
            assert base64.b64decode(info["path_b64"]) == p
            assert os.fsencode(info["path"]) == p
            assert base64.b64decode(info["archive_path_b64"]) == p[len(os.fsencode(m.mnt)) :]
        plain = m.cli("info", "--archive", str(archive), *arg).stdout
        plain.decode("utf-8")  # valid UTF-8 throughout
        assert not any((c < 0x20 and c != 0x0A) or c == 0x7F for c in plain), "raw control byte"
        assert b"n\\x1b\\xff" in plain and b"n\\x0a\\xff" in plain

        # GNU tar reads the tape file and extracts every name as it was given
        vol, fileno, _ = tape_locations(m, os.fsdecode(paths[0]))[0].split(":")
        assert {tape_locations(m, os.fsdecode(p))[0].split(":")[1] for p in paths} == {fileno}
        tarball = m.cli("tape", "read", "--archive", str(archive), vol, fileno).stdout
        out = tmp_path / "untarred"
        out.mkdir()
        subprocess.run(
            ["tar", "--warning=no-unknown-keyword", "-xf", "-", "-C", str(out)],
            input=tarball,
            check=True,
            capture_output=True,
        )
        read_all(os.fsencode(out) + b"/names")

        # released, then recalled: a batch in tape order and one by its open
        m.release(m.mnt / "names")
        assert os.getxattr(paths[0], "user.reelfs.state") == b"released"
        with open(paths[0], "rb") as f:
            assert f.read() == data_of(BYTES[0])
        m.cli("recall", "--wait", "--timeout", "90", os.fsdecode(d))
        read_all(d)
        m.umount()
    finally:
        m.stop()

    # the catalog lost: every name comes back from the tape's pax records
    for suffix in ("", "-wal", "-shm"):
        Path(f"{archive}/catalog.db{suffix}").unlink(missing_ok=True)
    rep = json.loads(
        reelfs("rebuild-catalog", "--from-tapes", "--archive", str(archive), "--json").stdout
    )
    assert rep["files"] == len(BYTES) + 1 and rep["lost_and_found"] == 0
    m = mount(archive, tmp_path / "mnt")
    try:
        assert m.cli("check", "--archive", str(archive)).returncode == 0
        m.release()
        m.cli("recall", "--wait", "--timeout", "90", str(m.mnt))
        read_all(d)
        # renamed: to another name of the same byte, in another directory
        os.mkdir(d + b"2")
        for b in BYTES:
            os.rename(d + b"/" + name_of(b), d + b"2/" + name_of(b, b"r\x01"))
        assert os.listdir(d) == []
        read_all(d + b"2", b"r\x01")
        infos = m.json("info", *(os.fsdecode(d + b"2/" + name_of(b, b"r\x01")) for b in BYTES))
        assert {i["state"] for i in infos} == {"archived"}  # a rename writes nothing again
    finally:
        m.stop()


def test_a_foreign_tape_with_every_byte_is_imported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_all(os.fsencode(src) + b"/names")
    tar = subprocess.run(
        ["tar", "--format=gnu", "-b", "20", "-cf", "-", "names"],
        cwd=src,
        capture_output=True,
        check=True,
    ).stdout
    archive = init_archive(tmp_path / "a", volumes=2, volume_size="16MiB")
    new_cartridge(archive, "FT0001")
    with cartridge(archive, "FT0001") as drive:
        write_records(drive, tar, 10240)
    reelfs("import-volume", "--archive", str(archive), "FT0001", "/imported")
    m = mount(archive, tmp_path / "mnt")
    try:
        d = os.fsencode(m.mnt) + b"/imported/names"
        assert {os.getxattr(d + b"/" + name_of(b), "user.reelfs.state") for b in BYTES} == {
            b"released"
        }
        m.cli("recall", "--wait", "--timeout", "90", os.fsdecode(d))
        read_all(d)
    finally:
        m.stop()


def test_a_member_the_catalog_cannot_record_fails_alone(tmp_path: Path) -> None:
    """Three files in one tape file, the mover handing a path no bytes stand for (a lone
    surrogate) for one: the other two are archived, the bad one is queued again with
    its error and a `commit_failed` event, and the volume counts two files."""
    cat = open_catalog(tmp_path / "catalog.db", create=True)
    try:
        VolumeClerk(cat).add("V1", capacity=10_000_000, home=1000, inserted_ns=1)
        files = FileClerk(cat, "0123ABCD")
        written = []
        for i, path in enumerate(["/a", "/caf\udce9", "/bad\ud800"]):
            node = Namespace(cat).create(ROOT_INODE, f"f{i}".encode(), stat.S_IFREG | 0o644, 0, 0)
            bf = files.create(node.id, family="default", size=0)
            (req,) = RequestQueue(cat).enqueue_write(bf.id, "default")
            bf = files.get(bf.id)
            assert bf is not None
            written.append(WrittenMember(req, "default", bf, path, i, 0, 1, 0))
        end = TapeFileEnd("V1", 0, 1, 3, 5, "none", None, 262144)
        result = commit_tape_file(cat, end, written)
        assert sorted(result.archived) == [written[0].bitfile.id, written[1].bitfile.id]
        assert files.get(written[1].bitfile.id).path == "/caf\udce9"  # its bytes, back
        bad = files.get(written[2].bitfile.id)
        assert bad.state == "dirty" and "could not be recorded" in bad.error
        assert RequestQueue(cat).writes_waiting([bad.id]) == {bad.id}
        (ev,) = events.recent(cat, kind="commit_failed")
        assert ev["subject"] == bad.bfid and ev["details"]["path"] == "/bad\ud800"
        assert cat.value("SELECT files FROM volumes WHERE label='V1'") == 2
    finally:
        cat.close()


def test_printable_escapes_what_a_terminal_would_obey() -> None:
    assert printable("caf\udce9") == "caf\\xe9"  # the byte 0xe9, not UTF-8
    assert printable("café") == "café"  # valid UTF-8 stays as it is
    assert printable("a\x1b[2J\nb\x7f") == "a\\x1b[2J\\x0ab\\x7f"
    assert printable("\x85") == "\\u0085"  # a C1 control (two bytes of UTF-8)
    assert printable(b"n\x01\xff") == "n\\x01\\xff"
    for b in BYTES:
        name = os.fsdecode(name_of(b))
        assert to_bytes(from_db(to_db(name)) or "") == name_of(b)
        assert printable(name).isprintable()
    assert to_db("café") == "café" and to_db("caf\udce9") == b"caf\xe9"
    assert topic_for("d\udce9/x#/f") == "v03.d%E9.x%23"
