"""Test helpers: create archives and mount them for real (a daemon process per mount).

Every mount is stopped by the PID it reported, even when a test fails.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mountfs.locate import reelfs_mounts
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent

#: test defaults: nothing is written to tape until a test flushes
TEST_OPTIONS = {
    "mover.flush_delay": "1h",
    "mover.idle_dismount": "2s",
    "cache.full_timeout": "10s",
}


def reelfs(
    *args: str,
    check: bool = True,
    env: dict | None = None,
    timeout: float = 300,
    input: bytes | None = None,
) -> subprocess.CompletedProcess:
    """Run the CLI as a user would (a separate process)."""
    e = dict(os.environ)
    e.pop("REELFS_ARCHIVE", None)
    if env:
        e.update(env)
    p = subprocess.run(
        [sys.executable, "-m", "mountfs.cli", *args],
        capture_output=True,
        env=e,
        timeout=timeout,
        cwd=REPO,
        input=input,
    )
    if check and p.returncode != 0:
        raise AssertionError(
            f"reelfs {' '.join(args)} exited {p.returncode}:\n{p.stdout.decode()}\n"
            f"{p.stderr.decode()}"
        )
    return p


def reelfs_seeing_only(
    mountpoints: Sequence[Path], *args: str, check: bool = True
) -> subprocess.CompletedProcess:
    """Run the CLI in a mount namespace of its own where, of all reelfs mounts, only
    `mountpoints` are visible: commands that look for "the" mounted archive then behave
    the same whatever else this machine has mounted (other tests, other users)."""
    keep = {str(m) for m in mountpoints}
    # live and stale alike: a stale mount of another test names an archive too
    others = [m.mountpoint for m in reelfs_mounts() if m.mountpoint not in keep]
    hide = "; ".join(f"umount -l {shlex.quote(m)}" for m in others)
    script = f"{hide + '; ' if hide else ''}exec {shlex.quote(sys.executable)} -m mountfs.cli "
    script += " ".join(shlex.quote(a) for a in args)
    e = dict(os.environ)
    e.pop("REELFS_ARCHIVE", None)
    p = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        env=e,
        timeout=300,
        cwd=REPO,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"reelfs {' '.join(args)} exited {p.returncode}:\n{p.stderr.decode()}")
    return p


def init_archive(
    path: Path,
    *,
    drives: int = 2,
    volumes: int = 4,
    volume_size: str = "64MiB",
    cache_size: str = "256MiB",
    options: dict[str, Any] | None = None,
    extra: Sequence[str] = (),
    vtl: Any = None,
) -> Path:
    """An archive with an emulated library, or on the tgt VTL `vtl` (tests.vtl.Vtl)."""
    opts = {**TEST_OPTIONS, **(options or {})}
    args = [
        "init",
        str(path),
        "--drives",
        str(drives),
        "--volumes",
        str(volumes),
        "--volume-size",
        volume_size,
        "--cache-size",
        cache_size,
        *extra,
    ]
    if vtl is not None:
        args += ["--library", "scsi", "--changer", vtl.changer]
        for d in vtl.drives:
            args += ["--drive", d]
    for k, v in opts.items():
        args += ["-o", f"{k}={json.dumps(v)}"]
    reelfs(*args)
    return path


@dataclass
class Mount:
    archive: Path
    mnt: Path
    pid: int
    stopped: bool = False
    extra: list[str] = field(default_factory=list)

    def cli(self, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
        return reelfs(*args, check=check, **kw)

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--archive", str(self.archive), "--json").stdout)

    def xattr(self, path: Path | str, name: str) -> str:
        return os.getxattr(path, f"user.reelfs.{name}").decode()

    def state(self, path: Path | str) -> str:
        return self.xattr(path, "state")

    def flush(self, *paths: Path | str, timeout: float = 120) -> None:
        self.cli("flush", "--wait", "--timeout", str(timeout), *map(str, paths or [self.mnt]))

    def release(self, *paths: Path | str) -> None:
        self.cli("release", *map(str, paths or [self.mnt]))

    def events(self, kind: str | None = None) -> list[dict]:
        args = ["events", "--limit", "1000"] + (["--kind", kind] if kind else [])
        return self.json(*args)

    def umount(self, *args: str) -> subprocess.CompletedProcess:
        p = self.cli("umount", str(self.mnt), *args)
        self.stopped = True
        return p

    def kill(self) -> None:
        """kill -9 the daemon and clean up the dead mount."""
        os.kill(self.pid, signal.SIGKILL)
        wait_for(lambda: not _alive(self.pid), timeout=30, what="daemon to die")
        subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        self.stopped = True

    def stop(self) -> None:
        """Teardown: unmount if still mounted; kill by PID if that does not work."""
        if self.stopped:
            return
        self.stopped = True
        try:
            reelfs(
                "umount", str(self.mnt), "--no-wait", "--timeout", "60", check=False, timeout=120
            )
        except subprocess.TimeoutExpired:
            pass
        if _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
            wait_for(lambda: not _alive(self.pid), timeout=30, what="daemon to die")
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)


def mount(
    archive: Path,
    mnt: Path,
    *options: str,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Mount:
    mnt.mkdir(parents=True, exist_ok=True)
    args = ["mount", str(archive), str(mnt), *extra]
    for o in options:
        args += ["-o", o]
    reelfs(*args, env=env)
    pid = int((archive / "run" / "daemon.lock").read_text().strip())
    return Mount(archive, mnt, pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_state(m: Mount, path: Path, state: str, timeout: float = 60) -> None:
    wait_for(lambda: m.state(path) == state, timeout=timeout, what=f"{path} to become {state}")


def file_of(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible-looking bytes."""
    import random

    return random.Random(seed).randbytes(size)


def tape_locations(m: Mount, path: Path) -> list[str]:
    try:
        return m.xattr(path, "location").splitlines()
    except OSError:
        return []


def now() -> float:
    return time.monotonic()
