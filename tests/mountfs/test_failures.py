"""Failure paths: media and drive errors, a full cache, a missing volume, a killed daemon,
an unexpected exception in a FUSE handler, bad configuration."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest

from backend.admin.control import ControlError, call
from backend.config import load
from drivers.emulated import inject_fault, open_library, remove_cartridge
from drivers.tape import ElementType
from mountfs.locate import mounted_archives
from tests.archive import (
    Mount,
    file_of,
    init_archive,
    mount,
    reelfs,
    reelfs_seeing_only,
    tape_locations,
)
from tests.waiting import wait_for


def make_family(m: Mount, name: str) -> Path:
    d = m.mnt / name
    d.mkdir()
    os.setxattr(d, "user.reelfs.file_family", name.encode())
    return d


def test_media_error_on_write_moves_the_file_to_another_volume(mounted: Mount) -> None:
    # blank volumes are drawn in insertion order: RF0001 is the first a family gets
    inject_fault(mounted.archive / "library", kind="media", volume="RF0001", block=0, op="write")
    f = mounted.mnt / "m.dat"
    f.write_bytes(file_of(300_000, 1))
    mounted.flush(f)
    (loc,) = tape_locations(mounted, f)
    assert not loc.startswith("RF0001:")
    vols = {v["label"]: v for v in mounted.json("volumes")}
    assert vols["RF0001"]["state"] == "suspect"
    assert "media" in (vols["RF0001"]["error"] or "").lower() or vols["RF0001"]["error"]
    assert mounted.events("volume_suspect")
    mounted.release(f)
    assert f.read_bytes() == file_of(300_000, 1)


def test_drive_error_marks_the_drive_down_and_the_other_drive_works(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a", drives=2, volumes=4)
    inject_fault(archive / "library", kind="drive", drive="drive0", op="write", count=None)
    m = mount(archive, tmp_path / "mnt")
    try:
        files = []
        for fam in ("f1", "f2"):  # two families: both drives get work at once
            d = make_family(m, fam)
            for i in range(6):
                p = d / f"{i}.dat"
                p.write_bytes(file_of(1_000_000, i))
                files.append(p)
        m.flush(m.mnt)
        assert all(m.state(p) == "archived" for p in files)
        drives = {d["name"]: d for d in m.json("drives")}
        assert drives["drive0"]["state"] == "down"
        assert "drive" in drives["drive0"]["reason"]
        assert drives["drive1"]["state"] == "up"
        assert m.events("drive_down")
        # the failed drive's tape went home: nothing is left in a drive
        wait_for(lambda: all(d["volume"] is None for d in m.json("drives")), timeout=30)
        m.release(m.mnt)
        for i, p in enumerate(files):
            assert p.read_bytes() == file_of(1_000_000, i % 6)
    finally:
        m.stop()


def test_unreadable_copy_gives_eio_and_says_why(mounted: Mount) -> None:
    f = mounted.mnt / "bad.dat"
    f.write_bytes(file_of(100_000, 3))
    mounted.flush(f)
    vol, _fileno, block = tape_locations(mounted, f)[0].split(":")
    mounted.release(f)
    inject_fault(mounted.archive / "library", kind="media", volume=vol, block=int(block), op="read")
    with pytest.raises(OSError) as e:
        f.read_bytes()
    assert e.value.errno == errno.EIO
    assert mounted.state(f) == "released"
    why = mounted.xattr(f, "error")
    assert "recall failed" in why and vol in why
    info = mounted.json("info", str(f))
    assert "recall failed" in info["error"]
    assert mounted.events("copy_bad")


def test_volume_missing_from_the_library(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a")
    m = mount(archive, tmp_path / "mnt")
    f = m.mnt / "away.dat"
    try:
        f.write_bytes(b"on a tape that leaves")
        m.flush(f)
        vol = tape_locations(m, f)[0].split(":")[0]
        m.release(f)
    finally:
        m.stop()
    # an operator takes the cartridge out through the mail slot
    lib = open_library(archive / "library")
    inv = lib.changer.inventory()
    ie = inv.of_type(ElementType.IMPORT_EXPORT)[0].address
    lib.changer.move(inv.find(vol).address, ie)
    lib.close()
    remove_cartridge(archive / "library", ie)
    m = mount(archive, tmp_path / "mnt")
    try:
        assert {v["label"]: v["state"] for v in m.json("volumes")}[vol] == "missing"
        with pytest.raises(OSError) as e:
            f.read_bytes()
        assert e.value.errno == errno.EIO
        assert vol in m.xattr(f, "error") and "missing" in m.xattr(f, "error")
    finally:
        m.stop()


def test_cache_full_is_enospc_only_when_nothing_can_make_room(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a", cache_size="4MiB", options={"cache.full_timeout": "2s"})
    m = mount(archive, tmp_path / "mnt")
    try:
        with pytest.raises(OSError) as e, open(m.mnt / "huge.dat", "wb") as fh:
            for _ in range(8):
                fh.write(b"x" * 1024 * 1024)
                fh.flush()
        assert e.value.errno == errno.ENOSPC
        # the mount is fine and the space comes back when the file goes
        os.unlink(m.mnt / "huge.dat")
        (m.mnt / "after.dat").write_bytes(b"ok")
        assert (m.mnt / "after.dat").read_bytes() == b"ok"
    finally:
        m.stop()


def test_cache_full_flushes_and_evicts_to_make_room(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a", cache_size="4MiB", options={"cache.full_timeout": "60s"})
    m = mount(archive, tmp_path / "mnt")
    try:
        for i in range(3):
            (m.mnt / f"old{i}.dat").write_bytes(file_of(1_000_000, i))
        big = file_of(2_500_000, 9)
        (m.mnt / "new.dat").write_bytes(big)  # needs the old files on tape and evicted
        assert (m.mnt / "new.dat").read_bytes() == big
        states = [m.state(m.mnt / f"old{i}.dat") for i in range(3)]
        assert "released" in states
        for i in range(3):
            assert (m.mnt / f"old{i}.dat").read_bytes() == file_of(1_000_000, i)
    finally:
        m.stop()


def test_file_larger_than_allowed_is_efbig(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a", options={"mount.max_file_size": "1MiB"})
    m = mount(archive, tmp_path / "mnt")
    try:
        with pytest.raises(OSError) as e, open(m.mnt / "big", "wb") as fh:
            fh.write(b"y" * (1024 * 1024 + 1))
        assert e.value.errno == errno.EFBIG
        with pytest.raises(OSError) as e:
            os.truncate(m.mnt / "big", 2 * 1024 * 1024)
        assert e.value.errno == errno.EFBIG
    finally:
        m.stop()


def test_unexpected_exception_in_a_handler_is_eio_and_the_mount_lives(mounted: Mount) -> None:
    (mounted.mnt / "f").write_bytes(b"data")
    sock = mounted.archive / "run" / "reelfsd.sock"
    call(sock, "inject_fault", target="read", count=1)
    fd = os.open(mounted.mnt / "f", os.O_RDONLY | os.O_DIRECT)
    try:
        with pytest.raises(OSError) as e:
            os.read(fd, 4096)
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)
    call(sock, "inject_fault", target="lookup", count=1)
    with pytest.raises(OSError) as e:
        os.stat(mounted.mnt / "not-cached-yet")
    assert e.value.errno == errno.EIO
    assert (mounted.mnt / "f").read_bytes() == b"data"
    log = (mounted.archive / "log" / "reelfsd.log").read_text()
    assert "unexpected error in read" in log and "injected fault" in log


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a")
    cfg = archive / "reelfs.toml"
    good = cfg.read_text()
    (tmp_path / "mnt").mkdir()
    assert "size = 268435456" in good
    cfg.write_text(good.replace("size = 268435456", 'size = "lots"'))
    p = reelfs("mount", str(archive), str(tmp_path / "mnt"), check=False)
    assert p.returncode == 2
    assert "[cache] size" in p.stderr.decode() and "lots" in p.stderr.decode()
    cfg.write_text(good + "\n[bogus]\nx = 1\n")
    p = reelfs("mount", str(archive), str(tmp_path / "mnt"), check=False)
    assert p.returncode == 2 and "unknown section [bogus]" in p.stderr.decode()
    cfg.write_text("this is = not [toml")
    p = reelfs("mount", str(archive), str(tmp_path / "mnt"), check=False)
    assert p.returncode == 2 and "not valid TOML" in p.stderr.decode()
    cfg.write_text(good)
    p = reelfs(
        "mount", str(archive), str(tmp_path / "mnt"), "-o", "recall.on_open=maybe", check=False
    )
    assert p.returncode == 2 and "on_open" in p.stderr.decode()
    elsewhere = tmp_path / "unmounted-disk" / "cache"
    p = reelfs(
        "mount", str(archive), str(tmp_path / "mnt"), "-o", f'cache.path="{elsewhere}"', check=False
    )
    assert p.returncode == 2 and f"[cache] path: {elsewhere} does not exist" in p.stderr.decode()
    assert not elsewhere.exists()  # not made on whatever disk is there instead
    assert not os.path.ismount(tmp_path / "mnt")


def test_init_takes_the_keys_mount_takes(tmp_path: Path) -> None:
    archive = init_archive(
        tmp_path / "a", options={"families.raw.width": 3, 'families."a.b".copies': 2}
    )
    with open(archive / "reelfs.toml", "rb") as f:
        written = tomllib.load(f)
    assert written["families"] == {"raw": {"width": 3}, "a.b": {"copies": 2}}
    config = load(archive)
    assert config.families == {"raw": 3, "a.b": 1} and config.family_copies == {"a.b": 2}
    p = reelfs("init", str(tmp_path / "b"), "-o", "families.raw.width=65", check=False)
    assert p.returncode == 2
    assert "configuration: reelfs.toml: [families.raw] width: expected an integer from 1 to 64" in (
        p.stderr.decode()
    )
    assert not (tmp_path / "b").exists()
    p = reelfs("init", str(tmp_path / "c"), "-o", "families", check=False)
    assert p.returncode == 2 and "expected SECTION.KEY=VALUE" in p.stderr.decode()


def test_a_changed_archive_id_is_refused_at_mount(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a")
    cfg = archive / "reelfs.toml"
    good = cfg.read_text()
    archive_id = tomllib.loads(good)["archive"]["id"]
    other = "ABCDEF01" if archive_id != "ABCDEF01" else "12345678"
    cfg.write_text(good.replace(f'id = "{archive_id}"', f'id = "{other}"'))
    (tmp_path / "mnt").mkdir()
    p = reelfs("mount", str(archive), str(tmp_path / "mnt"), check=False)
    assert p.returncode == 1 and p.stderr.decode().count("\n") == 1
    message = p.stderr.decode()
    assert f"[archive] id is '{other}'" in message and f"archive '{archive_id}'" in message
    assert not os.path.ismount(tmp_path / "mnt")
    cfg.write_text(good)  # the refusal left the archive as it was: it mounts with its own id
    m = mount(archive, tmp_path / "mnt")
    try:
        (m.mnt / "f").write_bytes(b"data")
        assert m.xattr(m.mnt / "f", "bfid").startswith(archive_id)
    finally:
        m.stop()


def test_cli_errors_are_one_line_and_nonzero(tmp_path: Path, mounted: Mount) -> None:
    p = reelfs("status", "--archive", str(tmp_path / "nowhere"), check=False)
    assert p.returncode == 1 and p.stderr.decode().count("\n") == 1
    assert "not a reelfs archive" in p.stderr.decode()
    p = reelfs("info", "--archive", str(mounted.archive), "/no/such/file", check=False)
    assert p.returncode == 1 and "No such file" in p.stderr.decode()
    p = reelfs("flush", str(tmp_path), check=False)
    assert p.returncode == 1 and "which archive" in p.stderr.decode()
    p = reelfs("mount", str(mounted.archive), str(tmp_path / "mnt2"), check=False)
    assert p.returncode == 2 and "[mount_point_not_directory]" in p.stderr.decode()
    (tmp_path / "mnt2").mkdir()
    p = reelfs("mount", str(mounted.archive), str(tmp_path / "mnt2"), check=False)
    assert p.returncode == 1 and "already mounted" in p.stderr.decode()
    p = reelfs("init", str(mounted.archive), check=False)
    assert p.returncode == 1 and "not an empty directory" in p.stderr.decode()
    p = reelfs("umount", str(tmp_path), check=False)
    assert p.returncode == 1 and "not a reelfs mount" in p.stderr.decode()


def test_permissions_between_two_users(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a")
    # other users must be able to reach the mount point: not under pytest's private tmp
    public = Path(tempfile.mkdtemp(prefix="reelfs-perm-", dir="/tmp"))
    os.chmod(public, 0o755)
    m = mount(archive, public / "mnt", extra=["--allow-other"])
    try:
        os.chmod(m.mnt, 0o1777)
        private = m.mnt / "private"
        private.mkdir(mode=0o700)

        def as_user(uid: int, *cmd: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd],
                capture_output=True,
                text=True,
            )

        r = as_user(1000, "ls", str(private))
        assert r.returncode != 0 and "Permission denied" in r.stderr
        r = as_user(1000, "sh", "-c", f"umask 022; echo mine > {m.mnt}/u1000.txt")
        assert r.returncode == 0, r.stderr
        st = (m.mnt / "u1000.txt").stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1000, 0o644)
        r = as_user(1001, "sh", "-c", f"echo theirs >> {m.mnt}/u1000.txt")
        assert r.returncode != 0 and "Permission denied" in r.stderr
        r = as_user(1001, "rm", "-f", str(m.mnt / "u1000.txt"))  # sticky directory
        assert r.returncode != 0
        r = as_user(1001, "cat", str(m.mnt / "u1000.txt"))
        assert r.returncode == 0 and r.stdout == "mine\n"
        r = as_user(1000, "chown", "1001", str(m.mnt / "u1000.txt"))
        assert r.returncode != 0
    finally:
        m.stop()
        shutil.rmtree(public, ignore_errors=True)


def test_status_json_tells_the_whole_picture(mounted: Mount) -> None:
    (mounted.mnt / "s").write_bytes(b"s" * 100)
    st = mounted.json("status")
    assert st["daemon"]["pid"] == mounted.pid
    assert st["files"]["dirty"]["files"] == 1
    assert st["queue"].get("write_queued") == 1
    assert {d["name"] for d in st["drives"]} == {"drive0", "drive1"}
    assert st["volumes"]["by_state"]["blank"] == 4
    json.dumps(st)


def test_operator_takes_a_drive_down_and_back_up(mounted: Mount) -> None:
    f = mounted.mnt / "d.dat"
    f.write_bytes(b"d" * 1000)
    out = mounted.cli(
        "drive", "down", "drive0", "--reason", "maintenance", "--archive", str(mounted.archive)
    ).stdout.decode()
    assert "drive0 is down" in out
    drives = {d["name"]: d for d in mounted.json("drives")}
    assert drives["drive0"]["state"] == "down" and drives["drive0"]["reason"] == "maintenance"
    mounted.flush(f)
    assert {e["subject"] for e in mounted.events("mount")} == {"drive1"}
    mounted.cli("drive", "up", "drive0", "--archive", str(mounted.archive))
    assert {d["name"]: d for d in mounted.json("drives")}["drive0"]["state"] == "up"
    p = mounted.cli("drive", "down", "drive9", "--archive", str(mounted.archive), check=False)
    assert p.returncode == 1 and "no drive named 'drive9'" in p.stderr.decode()


def test_write_protected_volume_becomes_readonly_and_the_file_goes_elsewhere(
    mounted: Mount,
) -> None:
    inject_fault(mounted.archive / "library", kind="write_protect", volume="RF0001")
    f = mounted.mnt / "wp.dat"
    f.write_bytes(b"w" * 5000)
    mounted.flush(f)
    assert not tape_locations(mounted, f)[0].startswith("RF0001:")
    vols = {v["label"]: v for v in mounted.json("volumes")}
    assert vols["RF0001"]["state"] == "readonly"
    assert "write-protected" in vols["RF0001"]["error"]


def test_umount_says_so_when_no_drive_can_write(mounted: Mount) -> None:
    for name in ("drive0", "drive1"):
        mounted.cli("drive", "down", name, "--archive", str(mounted.archive))
    (mounted.mnt / "stuck.dat").write_bytes(b"s")
    p = mounted.cli("umount", str(mounted.mnt), check=False)
    assert p.returncode == 1 and "no drive is up" in p.stderr.decode()
    assert os.path.ismount(mounted.mnt)  # nothing was lost or hidden: still mounted
    mounted.umount("--no-wait")


def test_a_mover_survives_an_unexpected_error(mounted: Mount) -> None:
    sock = mounted.archive / "run" / "reelfsd.sock"
    call(sock, "inject_fault", target="mover", count=1)
    f = mounted.mnt / "once.dat"
    f.write_bytes(b"g" * 1000)
    mounted.flush(f)  # the first attempt fails, the retry succeeds
    assert mounted.state(f) == "archived"
    (ev,) = mounted.events("mover_error")
    assert "injected fault" in ev["message"]
    assert all(d["state"] == "up" for d in mounted.json("drives"))


def test_a_mover_that_keeps_failing_takes_its_drive_down(mounted: Mount) -> None:
    arch = ["--archive", str(mounted.archive)]
    mounted.cli("drive", "down", "drive1", *arch)  # all the work goes to drive0
    # three crashes are restarted (through a cleaner session); the fourth in ten
    # minutes takes the drive down
    call(mounted.archive / "run" / "reelfsd.sock", "inject_fault", target="mover", count=4)
    f = mounted.mnt / "thrice.dat"
    f.write_bytes(b"t" * 1000)
    mounted.cli("flush", str(f))

    def drive0() -> dict:
        return {d["name"]: d for d in mounted.json("drives")}["drive0"]

    wait_for(lambda: drive0()["state"] == "down", timeout=120, what="drive0 down")
    assert "failed 4 times in 10 min" in drive0()["reason"]
    assert "injected fault" in drive0()["reason"]
    assert len(mounted.events("mover_error")) == 3  # the restarts; then worker_gave_up
    assert len(mounted.events("worker_gave_up")) == 1
    assert mounted.state(f) == "dirty"  # nothing lost: still queued
    mounted.cli("drive", "up", "drive1", *arch)
    mounted.flush(f)
    assert mounted.state(f) == "archived"


def test_commands_without_paths_find_the_only_mounted_archive(
    tmp_path: Path, mounted: Mount, make_archive
) -> None:
    p = reelfs_seeing_only([mounted.mnt], "status", "--json")  # from the repository
    assert json.loads(p.stdout)["archive"] == str(mounted.archive)
    second = mount(make_archive(), tmp_path / "mnt2")
    both = [mounted.mnt, second.mnt]
    try:
        p = reelfs_seeing_only(both, "volumes", check=False)
        err = p.stderr.decode()
        assert p.returncode == 1 and "2 are mounted" in err
        assert str(mounted.archive) in err and str(second.archive) in err
        # a path names its archive, and a path off every mount is never guessed at
        p = reelfs_seeing_only(both, "info", str(second.mnt))
        assert p.returncode == 0
        p = reelfs_seeing_only(both, "flush", str(tmp_path), check=False)
        assert p.returncode == 1 and "which archive?" in p.stderr.decode()
        assert "are mounted" not in p.stderr.decode()
    finally:
        second.umount()
    p = reelfs_seeing_only([mounted.mnt], "drives", "--json")
    assert p.returncode == 0


def test_mount_table_fields_are_unescaped(tmp_path: Path, mounted: Mount) -> None:
    table = tmp_path / "mounts"
    table.write_text(
        f"reelfs:{mounted.archive} {mounted.mnt} fuse.reelfs rw 0 0\n"
        "tmpfs /tmp tmpfs rw 0 0\n"
        f"reelfs:/gone {tmp_path}/no\\040such\\040mount fuse.reelfs rw 0 0\n"
    )
    assert mounted_archives(table) == [(str(mounted.mnt), mounted.archive)]
    assert mounted_archives(tmp_path / "absent") == []


def test_control_requests_with_wrong_arguments_are_refused_by_name(mounted: Mount) -> None:
    sock = mounted.archive / "run" / "reelfsd.sock"
    with pytest.raises(ControlError, match=r"clean: bad arguments: .*'bogus'"):
        call(sock, "library.clean", drive="drive0", bogus=1)
    with pytest.raises(ControlError, match=r"clean: bad arguments: .*'drive'"):
        call(sock, "library.clean")
    with pytest.raises(ControlError, match=r"unknown control operation 'catalog\.rebuild'"):
        call(sock, "catalog.rebuild")  # only without the daemon
    assert call(sock, "library.clean", drive="drive0")["queued"] is True  # the daemon lives
