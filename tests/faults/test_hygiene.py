"""Hygiene: extended attributes that copy cleanly, stale mounts after a crash, and an
archive directory other local users cannot read."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

from backend.permissions import tighten
from mountfs.locate import is_stale, mount_at
from tests.archive import Mount, init_archive, mount, reelfs, reelfs_seeing_only
from tests.waiting import wait_for

STATE_NAMES = (
    "user.reelfs.state",
    "user.reelfs.bfid",
    "user.reelfs.location",
    "user.reelfs.checksum.adler32",
    "user.reelfs.checksum.crc32c",
    "user.reelfs.archive",
)


def run(*cmd: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)


def family_tree(m: Mount) -> Path:
    """raw/ with a family and two copies, raw/a (archived, on tape) and raw/b (dirty)."""
    raw = m.mnt / "raw"
    raw.mkdir()
    os.setxattr(raw, "user.reelfs.file_family", b"raw")
    os.setxattr(raw, "user.reelfs.width", b"1")
    (raw / "a").write_bytes(b"archived data")
    m.flush(raw / "a")
    (raw / "b").write_bytes(b"dirty data")
    assert m.state(raw / "a") == "archived"
    return raw


# -- extended attributes ------------------------------------------------------------------


def test_state_attributes_are_readable_by_name_but_not_listed(mounted: Mount) -> None:
    raw = family_tree(mounted)
    listed = os.listxattr(raw / "a")
    assert not [n for n in listed if n.startswith("user.reelfs.")], listed
    assert os.getxattr(raw / "a", "user.reelfs.state") == b"archived"
    assert os.getxattr(raw / "a", "user.reelfs.location").count(b":") == 2
    assert os.getxattr(raw / "a", "user.reelfs.file_family") == b"raw"  # inherited, by name
    assert "user.reelfs.archive" not in os.listxattr(mounted.mnt)
    # the policy the user set is listed, the family first (the other settings need it)
    assert os.listxattr(raw)[:2] == ["user.reelfs.file_family", "user.reelfs.width"]


def test_cp_a_round_trip_carries_policy_and_no_stale_state(mounted: Mount, tmp_path: Path) -> None:
    raw = family_tree(mounted)
    os.setxattr(raw / "a", "user.project", b"kept")
    disk = tmp_path / "disk"
    disk.mkdir()
    p = run("cp", "-a", raw, disk)
    assert (p.returncode, p.stderr) == (0, "")
    copied = {n for f in ("a", "b") for n in os.listxattr(disk / "raw" / f)}
    assert copied == {"user.project"}  # no state=archived, no location, no inherited family
    assert os.getxattr(disk / "raw", "user.reelfs.file_family") == b"raw"
    # back into the mount: the directory's policy is restored, the files are new and dirty
    back = mounted.mnt / "back"
    back.mkdir()
    p = run("cp", "-a", disk / "raw", back)
    assert (p.returncode, p.stderr) == (0, "")
    assert os.getxattr(back / "raw", "user.reelfs.file_family") == b"raw"
    assert mounted.state(back / "raw" / "a") == "dirty"
    assert (back / "raw" / "a").read_bytes() == b"archived data"


def test_tar_xattrs_round_trip_is_silent(mounted: Mount, tmp_path: Path) -> None:
    family_tree(mounted)
    tarball = tmp_path / "raw.tar"
    p = run("tar", "--xattrs", "-cf", tarball, "-C", mounted.mnt, "raw")
    assert (p.returncode, p.stderr) == (0, "")
    listing = run("tar", "--xattrs", "-tvvf", tarball).stdout
    assert "user.reelfs.state" not in listing and "user.reelfs.bfid" not in listing
    into = mounted.mnt / "restored"
    into.mkdir()
    p = run("tar", "--xattrs", "-xf", tarball, "-C", into)
    assert (p.returncode, p.stderr) == (0, "")
    assert os.getxattr(into / "raw", "user.reelfs.file_family") == b"raw"
    assert (into / "raw" / "b").read_bytes() == b"dirty data"


def test_stale_state_from_an_old_copy_is_ignored_not_refused(
    mounted: Mount, tmp_path: Path
) -> None:
    # what cp -a made of an archived file before state was hidden from listxattr
    old = tmp_path / "old"
    old.mkdir()
    (old / "f").write_bytes(b"old copy")
    stale = {
        "user.reelfs.state": b"archived",
        "user.reelfs.bfid": b"0BADBAD0-1",
        "user.reelfs.location": b"RF0001:1:0",
        "user.reelfs.checksum.adler32": b"00000000",
        "user.reelfs.checksum.crc32c": b"00000000",
    }
    for name, value in stale.items():
        os.setxattr(old / "f", name, value)
    tarball = tmp_path / "old.tar"
    assert run("tar", "--xattrs", "-cf", tarball, "-C", tmp_path, "old").returncode == 0
    p = run("tar", "--xattrs", "-xf", tarball, "-C", mounted.mnt)
    assert (p.returncode, p.stderr) == (0, "")
    f = mounted.mnt / "old" / "f"
    assert mounted.state(f) == "dirty"  # the real state, not the stale one
    assert os.getxattr(f, "user.reelfs.bfid") != b"0BADBAD0-1"
    assert not [n for n in os.listxattr(f) if n in STATE_NAMES]


# -- stale mounts ---------------------------------------------------------------------------


def test_stale_mount_after_kill_9_is_named_refused_and_cleaned(
    mounted: Mount, tmp_path: Path
) -> None:
    f = mounted.mnt / "kept"
    with open(f, "wb") as out:
        out.write(b"written before the crash")
        os.fsync(out.fileno())
    os.kill(mounted.pid, signal.SIGKILL)
    wait_for(lambda: is_stale(mounted.mnt), timeout=30, what="the mount to go stale")
    arch = ["--archive", str(mounted.archive)]

    p = mounted.cli("status", *arch)
    assert f"stale mount on {mounted.mnt} (daemon gone)" in p.stdout.decode()
    assert mounted.json("status")["stale_mounts"] == [str(mounted.mnt)]
    # found without --archive too: the mount table names the archive
    p = reelfs_seeing_only([mounted.mnt], "status")
    assert "stale mount" in p.stdout.decode() and str(mounted.archive) in p.stdout.decode()

    p = mounted.cli("mount", str(mounted.archive), str(mounted.mnt), check=False)
    err = p.stderr.decode()
    assert p.returncode == 2 and "[stale_mount]" in err and "reelfs umount" in err, err
    assert err.count("\n") == 1

    # mounted elsewhere meanwhile: told of the stale mount, which status still shows
    mnt2 = tmp_path / "mnt2"
    mnt2.mkdir()
    p = mounted.cli("mount", str(mounted.archive), str(mnt2))
    again = Mount(mounted.archive, mnt2, int((mounted.archive / "run/daemon.lock").read_text()))
    try:
        assert f"also has a stale mount on {mounted.mnt}" in p.stderr.decode()
        assert (mnt2 / "kept").read_bytes() == b"written before the crash"
        assert mounted.json("status")["stale_mounts"] == [str(mounted.mnt)]

        p = mounted.cli("umount", str(mounted.mnt))
        assert "cleaned up the stale mount" in p.stdout.decode()
        assert mount_at(mounted.mnt) is None and not os.path.ismount(mounted.mnt)
        cleaned = mounted.events("stale_mount_cleaned")
        assert [e["details"]["mountpoint"] for e in cleaned] == [str(mounted.mnt)]
        assert mounted.json("status")["stale_mounts"] == []
    finally:
        again.stop()


def test_mount_over_a_non_empty_directory_needs_nonempty(archive: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "full"
    mnt.mkdir()
    (mnt / "underneath").write_text("hidden while mounted")
    p = reelfs("mount", str(archive), str(mnt), check=False)
    err = p.stderr.decode()
    assert p.returncode == 2 and "[mount_point_not_empty]" in err and "--nonempty" in err, err
    assert not os.path.ismount(mnt)
    m = mount(archive, mnt, extra=["--nonempty"])
    try:
        assert os.listdir(mnt) == []
    finally:
        m.stop()
    assert (mnt / "underneath").read_text() == "hidden while mounted"


# -- local security -----------------------------------------------------------------------


def as_nobody(*cmd: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


def everything_under(root: Path) -> list[tuple[str, os.stat_result]]:
    out = [(str(root), os.lstat(root))]
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            out.append((p, os.lstat(p)))
    return out


def readable_by_nobody(paths: list[tuple[str, os.stat_result]]) -> list[str]:
    """What user nobody can read (a file) or list or enter (a directory), asked as nobody."""
    lines = "".join(
        f"{'d' if stat.S_ISDIR(st.st_mode) else 'f'} {p}\n"
        for p, st in paths
        if not stat.S_ISLNK(st.st_mode)
    )
    script = (
        'while IFS=" " read -r t p; do '
        'if [ "$t" = d ]; then { [ -r "$p" ] || [ -x "$p" ]; } && echo "$p"; '
        'else [ -r "$p" ] && echo "$p"; fi; done; true'
    )
    p = as_nobody("sh", "-c", script, stdin=lines)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def test_nobody_reads_nothing_under_the_archive_whatever_the_umask() -> None:
    # other users must reach the mount point to be refused there: not under pytest's tmp
    public = Path(tempfile.mkdtemp(prefix="reelfs-hygiene-", dir="/tmp"))
    os.chmod(public, 0o755)
    old = os.umask(0)  # the most open umask: the archive's modes must not come from it
    m = None
    try:
        archive = init_archive(public / "archive", drives=1, volumes=2)
        # what an older reelfs left: a readable catalog, tape directory and tape image
        os.chmod(archive, 0o755)
        os.chmod(archive / "catalog.db", 0o644)
        os.chmod(archive / "library" / "tapes", 0o755)
        tape = next((archive / "library" / "tapes").glob("RF*.tape"))
        os.chmod(tape, 0o644)
        m = mount(archive, public / "mnt", extra=["--allow-other"])
        os.umask(old)
        (tightened,) = m.events("permissions_tightened")
        assert (tightened["details"]["files"], tightened["details"]["dirs"]) == (2, 2)

        secret = m.mnt / "secret"
        secret.mkdir(mode=0o700)
        (secret / "f").write_bytes(b"TOP-SECRET-PAYLOAD")
        os.chmod(secret / "f", 0o600)
        m.flush(secret / "f")  # on tape and in the cache
        (secret / "dirty").write_bytes(b"in the cache only")
        refused = as_nobody("cat", str(secret / "f"))
        assert refused.returncode != 0 and "Permission denied" in refused.stderr

        paths = everything_under(archive)
        assert len(paths) > 20  # catalog, WAL, cache files, tape images, run/, log/
        loose = [
            f"{p} {stat.S_IMODE(st.st_mode):04o}"
            for p, st in paths
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077
        ]
        assert loose == []
        assert {st.st_uid for _, st in paths} == {os.geteuid()}
        assert readable_by_nobody(paths) == []
    finally:
        os.umask(old)
        if m is not None:
            m.stop()
        shutil.rmtree(public, ignore_errors=True)


def test_tightening_keeps_the_way_to_a_mount_point_and_follows_no_link(tmp_path: Path) -> None:
    root = tmp_path / "arch"
    (root / "mnt").mkdir(parents=True)
    (root / "d").mkdir()
    (root / "a").write_text("a")
    (root / "d" / "b").write_text("b")
    (root / "theirs").write_text("c")
    os.chown(root / "theirs", 65534, 65534)
    outside = tmp_path / "outside"
    outside.write_text("not the archive's")
    (root / "link").symlink_to(outside)
    for p, mode in ((root, 0o755), (root / "mnt", 0o755), (root / "d", 0o777)):
        os.chmod(p, mode)
    for p in (root / "a", root / "d" / "b", root / "theirs", outside):
        os.chmod(p, 0o644)
    done = tighten([root, root / "d"], mountpoint=root / "mnt")
    modes = {
        p.name: stat.S_IMODE(os.lstat(p).st_mode)
        for p in (root, root / "mnt", root / "d", root / "a", root / "d" / "b", outside)
    }
    # others may still pass through the archive directory to the mount inside it
    assert modes == {
        "arch": 0o711,
        "mnt": 0o755,
        "d": 0o700,
        "a": 0o600,
        "b": 0o600,
        "outside": 0o644,
    }
    assert (done.files, done.dirs) == (3, 2)  # a, d/b, theirs; arch, d (once, not twice)
    assert (done.foreign_count, done.foreign) == (1, [f"{root / 'theirs'} (uid 65534)"])
    assert tighten([root], mountpoint=root / "mnt").changed == 0
