"""Running the mount: the archive daemon with the FUSE front end in its trio loop.

`reelfs mount` forks; the child becomes the daemon (its own session, output to the
archive's log) and tells the parent through a pipe when the file system is mounted, or
why it could not be, so the command's exit code and message are the real outcome.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import sys
from pathlib import Path

import pyfuse3
import trio

from backend.config import Config
from backend.daemon.archive import ArchiveDaemon
from backend.errors import ArchiveError
from backend.names import PrintableFormatter
from mountfs.fs import ReelFS

log = logging.getLogger("reelfs.mount")


class MountError(ArchiveError):
    """The daemon could not open or mount the archive; the message says why."""


def setup_logging(config: Config, *, foreground: bool, debug: bool) -> None:
    config.log_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.handlers.clear()
    fmt = PrintableFormatter(
        "%(asctime)s %(process)d %(threadName)s %(name)s %(levelname)s %(message)s"
    )
    fh = logging.handlers.WatchedFileHandler(config.log_dir / "reelfsd.log")
    fh.setFormatter(fmt)
    root.addHandler(fh)
    if foreground:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        root.addHandler(sh)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        logging.getLogger("pyfuse3").setLevel(logging.WARNING)


def fuse_options(config: Config, extra: list[str]) -> set[str]:
    opts = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    opts.add("fsname=reelfs:" + str(config.archive))
    opts.add("subtype=reelfs")
    if config.mount.allow_other:
        opts.add("allow_other")
    opts.update(extra)
    return opts


def serve(
    config: Config,
    mountpoint: Path,
    *,
    fuse_extra: list[str],
    ready: int | None,
    debug: bool = False,
) -> int:
    """Open the archive, mount it and serve until unmounted. Runs in the daemon process."""
    daemon = ArchiveDaemon(config, mountpoint=str(mountpoint))
    try:
        daemon.open()
    except Exception as e:
        log.exception("cannot open the archive")
        _tell(ready, f"ERR {e}")
        return 1
    fs = ReelFS(daemon)
    mounted = False
    try:
        try:
            pyfuse3.init(fs, str(mountpoint), fuse_options(config, fuse_extra))
        except Exception as e:
            log.exception("cannot mount")
            _tell(ready, f"ERR cannot mount {mountpoint}: {e}")
            return 1
        mounted = True
        log.info("archive %s mounted on %s", config.archive, mountpoint)
        trio.run(_main, daemon, fs, ready)
        return 0
    finally:
        if mounted:
            try:
                pyfuse3.close(unmount=True)
            except Exception:
                log.exception("pyfuse3.close")
        daemon.close()
        log.info("archive daemon for %s exits", config.archive)


def set_readahead(mountpoint: str, nbytes: int) -> None:
    """The kernel reads ahead 128 KiB on a FUSE mount unless told otherwise: larger
    requests make sequential reads through Python much cheaper."""
    st = os.stat(mountpoint)  # answered by our own loop, which is running by now
    knob = f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb"
    try:
        with open(knob, "w") as f:
            f.write(str(max(4, nbytes // 1024)))
    except OSError as e:  # not root, or no sysfs: the default stays
        log.info("readahead left at the kernel's default (%s: %s)", knob, e.strerror)


async def _main(daemon: ArchiveDaemon, fs: ReelFS, ready: int | None) -> None:
    async with trio.open_nursery() as nursery:
        await daemon.run_services(nursery)
        nursery.start_soon(fs.reaper)
        nursery.start_soon(_signals, nursery.cancel_scope)
        if daemon.mountpoint and daemon.config.mount.readahead:
            nursery.start_soon(
                trio.to_thread.run_sync,
                set_readahead,
                daemon.mountpoint,
                daemon.config.mount.readahead,
            )
        _tell(ready, "OK")
        await pyfuse3.main()
        fs.reap_now()
        nursery.cancel_scope.cancel()


async def _signals(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for sig in signals:
            log.info("signal %s: unmounting", signal.Signals(sig).name)
            pyfuse3.terminate()
            return


def _tell(fd: int | None, msg: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, msg.encode() + b"\n")
        os.close(fd)
    except OSError:
        pass


def daemonize_and_serve(
    config: Config, mountpoint: Path, *, fuse_extra: list[str], debug: bool
) -> None:
    """Fork a daemon; return in the parent once it is mounted (MountError if not)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r) as f:
            line = f.readline().strip()
        if line != "OK":
            os.waitpid(pid, 0)
            raise MountError(
                line.removeprefix("ERR ")
                or f"the daemon died while starting; see {config.log_dir / 'reelfsd.log'}"
            )
        return
    # the daemon
    os.close(r)
    code = 1
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        logf = os.open(
            config.log_dir / "reelfsd.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        os.dup2(logf, 1)
        os.dup2(logf, 2)
        setup_logging(config, foreground=False, debug=debug)
        code = serve(config, mountpoint, fuse_extra=fuse_extra, ready=w, debug=debug)
    except BaseException:
        logging.getLogger("reelfs").exception("daemon failed")
        _tell(w, "ERR the daemon failed while starting")
    finally:
        os._exit(code)
