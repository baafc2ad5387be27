"""kill -9 campaign: the daemon killed at random points loses no file closed after fsync.

One archive (emulated library, two drives, ANSI-labelled volumes) lives for the whole
campaign. Each run mounts it (a remount after the last run's kill), does one kind of work,
kills the daemon with SIGKILL at a random delay into it, cleans the stale mount
(`fusermount3 -u -z`), remounts, and then reads back every file that was ever closed
after an fsync, comparing its sha256 with what was written, and runs `reelfs check`.

    write    two writer threads create files (and overwrite old ones), each written,
             fsynced and closed; the movers flush behind them (`mover.flush_delay` 2 s)
    flush    a batch of files is written, `reelfs flush --wait` started, and the daemon
             killed while the movers write them to tape
    recall   up to 20 archived files are released, two readers read them back (recalls
             from tape, sha256 checked as they arrive), and the daemon is killed meanwhile
    rebuild  (about one run in ten) everything is flushed, the archive cleanly unmounted,
             `reelfs rebuild-catalog --from-tapes --force` started and killed (SIGKILL)
             at a random point, then run again to its end; every file must come back
             from the tapes alone

A file being overwritten when the kill came is dropped from the set (its content is
whatever the crash left); every other one must read back exactly. Nothing waits without a
deadline: a remount, a command or a read-back that outlives its deadline is a finding
("hang"), printed with what it looked like, and the campaign stops there.

    python3 benchmarks/crash_campaign.py --runs 100 --seed 1 [--dir WORK] [--keep]

Prints one line per run and a summary; exits 1 if anything was lost, a check failed or
something hung. Not a test: run it by hand, as root.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import harness  # puts the repository on sys.path

from tests.archive import Mount, _alive, file_of, init_archive, reelfs

REMOUNT_TIMEOUT = 90.0  # s: a mount that takes longer is a hang
COMMAND_TIMEOUT = 240.0  # s: flush --wait, umount, rebuild to its end
MAX_FILES = 1200  # beyond this the writers overwrite instead of creating
PHASES = ["write"] * 4 + ["flush"] * 3 + ["recall"] * 3


class Hang(Exception):
    """Something outlived its deadline: a finding, not a fault of the campaign."""


@dataclass
class Ledger:
    """What the campaign knows must be in the archive: name -> sha256 of what was written
    and closed after fsync. A file being rewritten is taken out until its close returns."""

    durable: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 0

    def new_name(self) -> str:
        with self.lock:
            self.next_id += 1
            return f"d{self.next_id % 20:02d}/f{self.next_id:06d}.dat"


@dataclass
class RunResult:
    """The figures of one run."""

    run: int
    phase: str
    kill_at: float = 0.0
    written: int = 0
    checked: int = 0
    readbacks: int = 0
    lost: list[str] = field(default_factory=list)
    check_ok: bool = True
    check_text: str = ""
    remount_s: float = 0.0
    verify_s: float = 0.0
    note: str = ""
    stuck_client: bool = False


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_one(mnt: Path, ledger: Ledger, rng: random.Random) -> bool:
    """Create (or overwrite) one file, fsync, close; True once it is durable."""
    with ledger.lock:
        overwrite = len(ledger.durable) >= MAX_FILES or (ledger.durable and rng.random() < 0.15)
        if overwrite:
            name = rng.choice(sorted(ledger.durable))
            del ledger.durable[name]  # unknown content until the close returns
        else:
            name = ""
    if not name:
        name = ledger.new_name()
    size = rng.choice([0, 1, 4096, 65536]) if rng.random() < 0.1 else rng.randint(1, 200_000)
    data = file_of(size, rng.randrange(1 << 30))
    path = mnt / name
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    with ledger.lock:
        ledger.durable[name] = sha256(data)
    return True


class Writers:
    """Writer threads that stop at the first error (the daemon died) or when told."""

    def __init__(self, mnt: Path, ledger: Ledger, seed: int, n: int, limit: int) -> None:
        self.stop = threading.Event()
        self.count = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(
                target=self._run, args=(mnt, ledger, random.Random(seed * 100 + i), limit)
            )
            for i in range(n)
        ]
        for t in self.threads:
            t.start()

    def _run(self, mnt: Path, ledger: Ledger, rng: random.Random, limit: int) -> None:
        for _ in range(limit):
            if self.stop.is_set():
                return
            try:
                write_one(mnt, ledger, rng)
            except OSError as e:
                self.errors.append(f"{e.__class__.__name__}: {e}")
                return
            with self._lock:
                self.count += 1

    def join(self, timeout: float, *, stop: bool = True) -> None:
        """Wait for the writers (told to stop first unless `stop` is False)."""
        if stop:
            self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise Hang(f"a writer thread still blocked {timeout:.0f}s after the kill")


@contextlib.contextmanager
def watchdog(seconds: float, what: str, pid: int) -> Iterator[list[str]]:
    """Kill the daemon if the block outlives `seconds` (aborting the FUSE requests it
    blocks), and raise Hang: a read-back that never returns is a finding."""
    fired: list[str] = []
    done = threading.Event()

    def guard() -> None:
        if not done.wait(seconds):
            fired.append(f"{what} not done after {seconds:.0f}s")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    t = threading.Thread(target=guard, daemon=True)
    t.start()
    try:
        yield fired
    finally:
        done.set()
        t.join()
    if fired:
        raise Hang(fired[0])


def process_picture(pid: int) -> str:
    """What a stuck daemon looks like: its state and the wait channel of each thread."""
    lines = []
    try:
        with open(f"/proc/{pid}/status") as f:
            lines += [ln.strip() for ln in f if ln.startswith(("State", "Threads"))]
        for tid in sorted(os.listdir(f"/proc/{pid}/task"))[:20]:
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
                wchan = Path(f"/proc/{pid}/task/{tid}/wchan").read_text().strip()
                st = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                lines.append(f"  {tid} {comm} {st} {wchan}")
    except OSError as e:
        lines.append(f"(no /proc/{pid}: {e})")
    return "\n".join(lines)


class Campaign:
    """One archive and its ledger through every run."""

    def __init__(self, work: Path, seed: int) -> None:
        self.work = work
        self.archive = work / "archive"
        self.mnt = work / "mnt"
        self.rng = random.Random(seed)
        self.seed = seed
        self.ledger = Ledger()
        self.m: Mount | None = None

    # -- the archive's life ------------------------------------------------------------

    def create(self) -> None:
        init_archive(
            self.archive,
            drives=2,
            volumes=8,
            volume_size="384MiB",
            cache_size="1GiB",
            extra=["--label-format", "ansi"],
            options={"mover.flush_delay": "2s", "mover.idle_dismount": "2s"},
        )

    def mount(self) -> float:
        if os.path.ismount(self.mnt):
            raise Hang(f"{self.mnt} still a mount point before the remount")
        self.mnt.mkdir(exist_ok=True)
        t0 = time.monotonic()
        try:
            reelfs("mount", str(self.archive), str(self.mnt), timeout=REMOUNT_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            pid = self._lock_pid()
            picture = process_picture(pid) if pid else "(no daemon.lock)"
            raise Hang(f"remount not done after {REMOUNT_TIMEOUT:.0f}s:\n{picture}") from e
        pid = self._lock_pid()
        assert pid, "mounted, but run/daemon.lock names no pid"
        self.m = Mount(self.archive, self.mnt, pid)
        return time.monotonic() - t0

    def _lock_pid(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            return int((self.archive / "run" / "daemon.lock").read_text().strip())
        return 0

    def kill(self) -> None:
        """SIGKILL the daemon, wait for it to be gone, clean the stale mount."""
        assert self.m is not None
        pid = self.m.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while _alive(pid):
            if time.monotonic() > deadline:
                raise Hang(f"daemon {pid} still alive 60s after SIGKILL:\n{process_picture(pid)}")
            time.sleep(0.05)
        subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True, timeout=30)
        self.m.stopped = True
        self.m = None

    def cli(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        try:
            return reelfs(*args, check=False, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise Hang(f"reelfs {' '.join(args)} not done after {timeout:.0f}s") from e

    def flush_all(self) -> None:
        p = self.cli("flush", "--wait", "--timeout", str(COMMAND_TIMEOUT - 30), str(self.mnt))
        if p.returncode != 0:
            raise Hang(f"flush --wait of everything failed: {p.stderr.decode().strip()}")

    # -- the phases ----------------------------------------------------------------------

    def kill_after(self, delay: float, r: RunResult) -> None:
        r.kill_at = delay
        time.sleep(delay)  # the random point of the kill, not a synchronisation
        self.kill()

    def phase_write(self, r: RunResult) -> None:
        w = Writers(self.mnt, self.ledger, self.rng.randrange(1 << 30), 2, 150)
        self.kill_after(self.rng.uniform(0.2, 4.0), r)
        w.join(60)
        r.written = w.count

    def phase_flush(self, r: RunResult) -> None:
        w = Writers(self.mnt, self.ledger, self.rng.randrange(1 << 30), 2, 15)
        w.join(COMMAND_TIMEOUT, stop=False)
        r.written = w.count
        cmd = ["flush", "--wait", "--timeout", "120", "--archive", str(self.archive)]
        flush = subprocess.Popen(
            [sys.executable, "-m", "mountfs.cli", *cmd, str(self.mnt)],
            cwd=harness.REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            self.kill_after(self.rng.uniform(0.6, 4.0), r)
            try:
                flush.wait(timeout=60)
            except subprocess.TimeoutExpired:
                # a finding, but the archive is fine: the client polls the catalog until
                # its own --timeout without noticing the daemon is gone
                r.stuck_client = True
                r.note = "FINDING: flush --wait still waiting 60s after the daemon died"
                return
            if flush.returncode == 0:
                r.note = "flush done before the kill"
            else:
                err = flush.stderr.read().decode().strip().splitlines() if flush.stderr else []
                r.note = f"flush exit {flush.returncode}: {err[-1] if err else ''}"[:120]
        finally:
            if flush.poll() is None:
                flush.kill()
                flush.wait()

    def phase_recall(self, r: RunResult) -> None:
        with self.ledger.lock:
            names = self.rng.sample(sorted(self.ledger.durable), min(60, len(self.ledger.durable)))
        archived = [n for n in names if self._state(n) == "archived"][:20]
        if not archived and names:
            self.flush_all()
            archived = [n for n in names if self._state(n) == "archived"][:20]
        if archived:
            p = self.cli("release", *(str(self.mnt / n) for n in archived))
            if p.returncode != 0:
                r.note = f"release: {p.stderr.decode().strip()}"[:120]
        bad: list[str] = []
        done = [0]
        stop = threading.Event()

        def reader(part: list[str]) -> None:
            for n in part:
                if stop.is_set():
                    return
                with self.ledger.lock:
                    want = self.ledger.durable.get(n)
                try:
                    got = sha256((self.mnt / n).read_bytes())
                except OSError:
                    return  # the daemon is gone
                if want is not None and got != want:
                    bad.append(n)
                done[0] += 1

        threads = [threading.Thread(target=reader, args=(archived[i::2],)) for i in range(2)]
        for t in threads:
            t.start()
        self.kill_after(self.rng.uniform(0.05, 3.0), r)
        stop.set()
        for t in threads:
            t.join(60)
            if t.is_alive():
                raise Hang("a recall reader still blocked 60s after the kill")
        r.readbacks += done[0]
        r.lost += [f"{n}: recalled with a wrong sha256 before the kill" for n in bad]
        r.note = r.note or f"released {len(archived)}, read {done[0]} before the kill"

    def phase_rebuild(self, r: RunResult) -> None:
        self.flush_all()
        assert self.m is not None
        p = self.cli("umount", str(self.mnt), "--timeout", "120")
        if p.returncode != 0:
            raise Hang(f"umount before the rebuild failed: {p.stderr.decode().strip()}")
        self.m.stopped = True
        self.m = None
        args = ["rebuild-catalog", "--from-tapes", "--force", "--archive", str(self.archive)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "mountfs.cli", *args],
            cwd=harness.REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        r.kill_at = self.rng.uniform(0.3, 4.0)
        try:
            proc.wait(timeout=r.kill_at)
            r.note = "rebuild finished before the kill"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=60)
            r.note = "rebuild killed"
        p = self.cli(*args, "--json")
        if p.returncode != 0:
            raise Hang(f"rebuild after the killed one failed: {p.stderr.decode().strip()}")
        rep = json.loads(p.stdout)
        r.note += f"; rebuilt {rep['files']} files from {rep['volumes_scanned']} volumes"

    def _state(self, name: str) -> str:
        try:
            return os.getxattr(self.mnt / name, "user.reelfs.state").decode()
        except OSError:
            return ""

    # -- the check after each run ---------------------------------------------------------

    def verify(self, r: RunResult) -> None:
        assert self.m is not None
        with self.ledger.lock:
            expected = dict(self.ledger.durable)
        t0 = time.monotonic()
        with watchdog(120 + 0.2 * len(expected), "read-back of every durable file", self.m.pid):
            for name, want in sorted(expected.items()):
                try:
                    got = sha256((self.mnt / name).read_bytes())
                except OSError as e:
                    r.lost.append(f"{name}: {e.__class__.__name__} {e.strerror}")
                    continue
                r.readbacks += 1
                if got != want:
                    r.lost.append(f"{name}: sha256 {got[:12]} != written {want[:12]}")
        r.checked = len(expected)
        r.verify_s = time.monotonic() - t0
        p = self.cli("check", "--archive", str(self.archive), timeout=120)
        r.check_ok = p.returncode == 0
        r.check_text = (p.stderr or p.stdout).decode().strip()

    def run(self, i: int, phase: str) -> RunResult:
        r = RunResult(i, phase)
        if self.m is None:
            self.mount()
        getattr(self, f"phase_{phase}")(r)
        r.remount_s = self.mount()
        self.verify(r)
        return r


def line(r: RunResult) -> str:
    check = "ok" if r.check_ok else "FAIL"
    return (
        f"run {r.run:3d} {r.phase:<7} kill@{r.kill_at:4.2f}s wrote {r.written:3d} "
        f"checked {r.checked:4d} read-backs {r.readbacks:4d} lost {len(r.lost)} check {check} "
        f"remount {r.remount_s:4.1f}s verify {r.verify_s:5.1f}s  {r.note}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default in /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the archive afterwards")
    a = ap.parse_args()
    work = (a.dir or Path(f"/tmp/crash-campaign-{a.seed}")).absolute()
    if os.path.ismount(work / "mnt"):
        print(f"crash_campaign: {work / 'mnt'} is mounted; unmount it first", file=sys.stderr)
        return 2
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    camp = Campaign(work, a.seed)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=harness.REPO
    ).stdout.strip()
    print(f"crash campaign: {a.runs} runs, seed {a.seed}, commit {commit}, work {work}")
    camp.create()
    results: list[RunResult] = []
    hang = ""
    t_start = time.monotonic()
    try:
        for i in range(1, a.runs + 1):
            phase = "rebuild" if camp.rng.random() < 0.1 else camp.rng.choice(PHASES)
            try:
                r = camp.run(i, phase)
            except Hang as e:
                hang = f"run {i} ({phase}): {e}"
                print(f"run {i:3d} {phase:<7} HANG: {e}", flush=True)
                break
            results.append(r)
            print(line(r), flush=True)
            for lost in r.lost:
                print(f"    LOST {lost}", flush=True)
            if not r.check_ok:
                print(f"    CHECK {r.check_text}", flush=True)
    finally:
        if camp.m is not None:
            camp.m.stop()
        if not a.keep and not hang:
            shutil.rmtree(work, ignore_errors=True)
    lost = sum(len(r.lost) for r in results)
    check_failures = sum(not r.check_ok for r in results)
    phases = {
        p: sum(r.phase == p for r in results) for p in ["write", "flush", "recall", "rebuild"]
    }
    remounts = sorted(r.remount_s for r in results) or [0.0]
    print()
    kinds = ", ".join(f"{k} {v}" for k, v in phases.items())
    print(f"runs                {len(results)} of {a.runs} ({kinds})")
    print(f"files written       {sum(r.written for r in results)} (closed after fsync)")
    checked = sum(r.checked for r in results)
    print(
        f"files checked       {checked} (the ledger at each check, summed; "
        f"{len(camp.ledger.durable)} distinct at the end)"
    )
    print(f"sha256 read-backs   {sum(r.readbacks for r in results)}")
    print(f"lost                {lost}")
    print(f"check failures      {check_failures}")
    stuck = sum(r.stuck_client for r in results)
    print(f"stuck clients       {stuck} (flush --wait still waiting 60s after the kill)")
    print(f"hangs               {1 if hang else 0}{': ' + hang.splitlines()[0] if hang else ''}")
    print(
        f"remount             median {remounts[len(remounts) // 2]:.1f}s, max {remounts[-1]:.1f}s"
    )
    print(f"wall                {time.monotonic() - t_start:.0f}s")
    return 1 if lost or check_failures or hang or stuck else 0


if __name__ == "__main__":
    sys.exit(main())
