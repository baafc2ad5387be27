#!/usr/bin/env python3
"""A private tgt virtual tape library on 127.0.0.1, for reelfs's SCSI driver tests and demos.

`start` runs its own `tgtd` (own iSCSI port, own control port, own directory for tape
images, PID recorded), builds an iSCSI target with N tape drives and one media changer with
M storage slots of fresh tapes (made with `tgtimg`), import/export slots and a cleaning
cartridge, raises the iSCSI PDU sizes, names the LUs (vendor, product, serials) and prints
the URLs to put in `reelfs.toml`. `stop` stops exactly the recorded PID. `operator` plays
the operator at the mail slots (`tgtadm` puts a new cartridge into an import/export slot or
takes one out).

    examples/vtl/start-vtl --dir /tmp/vtl --drives 2 --slots 8 --tape-size 64
    examples/vtl/stop-vtl --dir /tmp/vtl

Element addresses: transport 1, import/export 10.., drives 500.., storage slots 1000...
LUN 0 is tgt's controller LUN; the drives are LUNs 1..N and the changer LUN N+1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

TRANSPORT_ADDRESS = 1
IE_START = 10
DRIVE_START = 500
SLOT_START = 1000
STATE_FILE = "vtl.json"
PDU_SIZE = 262144
SOCKET_DIR = Path("/var/run/tgtd")


class VtlError(RuntimeError):
    pass


@dataclass
class VtlState:
    directory: str
    pid: int
    port: int
    control_port: int
    target: str
    drives: list[str]
    changer: str
    drive_serials: list[str]
    drive_elements: list[int]
    slots: list[int]
    import_export: list[int]
    tapes: dict[str, int] = field(default_factory=dict)  # barcode -> home slot
    cleaning: list[str] = field(default_factory=list)
    tape_size_mb: int = 0
    changer_lun: int = 0

    def toml(self) -> str:
        drives = ", ".join(f'"{u}"' for u in self.drives)
        return f'[library]\ntype = "scsi"\nchanger = "{self.changer}"\ndrives = [{drives}]\n'


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise VtlError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _tgtadm(cport: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("tgtadm", "-C", str(cport), "--lld", "iscsi", *args, check=check)


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise VtlError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _is_our_tgtd(pid: int, cport: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmd) and cmd[0].endswith(b"tgtd") and str(cport).encode() in cmd


def make_tape(directory: Path, barcode: str, size_mb: int, kind: str = "data") -> Path:
    if not 1 <= len(barcode) <= 10:
        raise VtlError(f"barcode {barcode!r}: tgt keeps at most 10 characters")
    path = directory / barcode
    if path.exists():
        path.unlink()
    _run(
        "tgtimg", "--op", "new", "--device-type", "tape", f"--barcode={barcode}",
        f"--size={size_mb}", f"--type={kind}", f"--file={path}",
    )  # fmt: skip
    return path


def start(
    directory: Path,
    *,
    port: int = 3261,
    control_port: int | None = None,
    drives: int = 2,
    slots: int = 8,
    tapes: int | None = None,
    tape_size_mb: int = 64,
    ie_slots: int = 2,
    cleaning: bool = True,
    barcode_prefix: str = "RL",
    target: str = "iqn.2024-01.org.reelfs:vtl",
    vendor: str = "REELFS",
    pdu_size: int = PDU_SIZE,
    drive_product: str = "VTL-DRIVE",
) -> VtlState:
    for tool in ("tgtd", "tgtadm", "tgtimg"):
        if shutil.which(tool) is None:
            raise VtlError(f"{tool} not found: install the 'tgt' package")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    old = load_state(directory)
    if old is not None and _alive(old.pid):
        raise VtlError(f"a VTL is already running from {directory} (pid {old.pid})")
    cport = control_port if control_port is not None else port
    if not 0 < cport < 32768:
        raise VtlError("tgtd's control port is a short int: choose one below 32768")
    if (SOCKET_DIR / f"socket.{cport}").exists() and _run(
        "tgtadm", "-C", str(cport), "--op", "show", "--mode", "system", check=False
    ).returncode == 0:
        raise VtlError(f"another tgtd already answers on control port {cport}")
    if not 0 < len(drive_product) <= 16 or "," in drive_product or not drive_product.isascii():
        raise VtlError("--drive-product: 1 to 16 ASCII characters, no comma (INQUIRY field)")
    ntapes = tapes if tapes is not None else slots - (1 if cleaning else 0)
    if ntapes + (1 if cleaning else 0) > slots:
        raise VtlError("more tapes than slots")
    if len(f"{directory}/{barcode_prefix}0000") >= 128:
        raise VtlError("tgt limits media_home/<barcode> to 127 characters: use a shorter --dir")

    images = directory / "tapes"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir()
    barcodes = [f"{barcode_prefix}{i:04d}" for i in range(1, ntapes + 1)]
    for b in barcodes:
        make_tape(images, b, tape_size_mb)
    cleaners = ["CLN001"] if cleaning else []
    for b in cleaners:
        make_tape(images, b, 1, "clean")
    smc = directory / "smc"
    smc.write_bytes(bytes(1024))

    log = open(directory / "tgtd.log", "ab")  # noqa: SIM115 - handed to the daemon
    proc = subprocess.Popen(
        ["tgtd", "-f", "-C", str(cport), "--iscsi", f"portal=127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=directory,
    )
    log.close()
    (directory / "tgtd.pid").write_text(f"{proc.pid}\n")
    state = VtlState(
        directory=str(directory),
        pid=proc.pid,
        port=port,
        control_port=cport,
        target=target,
        drives=[],
        changer="",
        drive_serials=[],
        drive_elements=[],
        slots=[],
        import_export=[],
        tape_size_mb=tape_size_mb,
    )
    save_state(state)
    try:
        _configure(
            state, proc, images, smc, drives, slots, ie_slots, barcodes, cleaners, vendor,
            pdu_size, drive_product,
        )  # fmt: skip
    except BaseException:
        stop(directory)
        raise
    save_state(state)
    return state


def _configure(
    state: VtlState,
    proc: subprocess.Popen[bytes],
    images: Path,
    smc: Path,
    ndrives: int,
    nslots: int,
    nie: int,
    barcodes: list[str],
    cleaners: list[str],
    vendor: str,
    pdu_size: int,
    drive_product: str,
) -> None:
    cport = state.control_port

    def ready() -> bool:
        if proc.poll() is not None:
            raise VtlError(f"tgtd exited with {proc.returncode}; see {state.directory}/tgtd.log")
        return (
            _run(
                "tgtadm", "-C", str(cport), "--op", "show", "--mode", "system", check=False
            ).returncode
            == 0
        )

    _wait_for(ready, 15.0, "tgtd's control socket")
    a = lambda *args: _tgtadm(cport, *args)  # noqa: E731
    a("--op", "new", "--mode", "target", "--tid", "1", "-T", state.target)
    for name in (
        "MaxRecvDataSegmentLength",
        "MaxXmitDataSegmentLength",
        "FirstBurstLength",
        "MaxBurstLength",
    ):
        a("--op", "update", "--mode", "target", "--tid", "1", "--name", name,
          "--value", str(pdu_size))  # fmt: skip
    a("--op", "update", "--mode", "target", "--tid", "1", "--name", "InitialR2T", "--value", "No")
    version = _run("tgtd", "-V", check=False).stdout.strip() or "tgt"
    rev = "".join(c for c in version.split()[-1] if c.isdigit())[-4:] or "0001"
    changer_lun = ndrives + 1
    for i in range(ndrives):
        lun = i + 1
        serial = f"{state.target[-3:].upper()}D{i:05d}"[-10:]
        a("--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", str(lun),
          "--device-type", "tape", "-b", "")  # fmt: skip
        a("--mode", "logicalunit", "--op", "update", "--tid", "1", "--lun", str(lun),
          "--params", f"vendor_id={vendor},product_id={drive_product},product_rev={rev},"
          f"scsi_sn={serial}")  # fmt: skip
        state.drive_serials.append(serial)
        state.drives.append(f"iscsi://127.0.0.1:{state.port}/{state.target}/{lun}")
    a("--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", str(changer_lun),
      "--device-type", "changer", "-b", str(smc))  # fmt: skip
    c = lambda params: a(  # noqa: E731
        "--mode", "logicalunit", "--op", "update", "--tid", "1", "--lun", str(changer_lun),
        "--params", params,
    )  # fmt: skip
    c(f"vendor_id={vendor},product_id=VTL-CHANGER,product_rev={rev},scsi_sn=VTLC000001")
    c(f"media_home={images}")
    c(f"element_type=1,start_address={TRANSPORT_ADDRESS},quantity=1")
    c(f"element_type=2,start_address={SLOT_START},quantity={nslots}")
    if nie:
        c(f"element_type=3,start_address={IE_START},quantity={nie}")
    c(f"element_type=4,start_address={DRIVE_START},quantity={ndrives}")
    for i in range(ndrives):
        c(f"element_type=4,address={DRIVE_START + i},tid=1,lun={i + 1}")
        state.drive_elements.append(DRIVE_START + i)
    state.slots = [SLOT_START + i for i in range(nslots)]
    state.import_export = [IE_START + i for i in range(nie)]
    # Data tapes fill the first slots, cleaning cartridges the last ones.
    for i, b in enumerate(barcodes):
        c(f"element_type=2,address={SLOT_START + i},barcode={b},sides=1")
        state.tapes[b] = SLOT_START + i
    for j, b in enumerate(cleaners):
        addr = SLOT_START + nslots - 1 - j
        c(f"element_type=2,address={addr},barcode={b},sides=1")
        state.tapes[b] = addr
    state.cleaning = cleaners
    state.changer = f"iscsi://127.0.0.1:{state.port}/{state.target}/{changer_lun}"
    state.changer_lun = changer_lun
    # Loopback initiators only (the portal is bound to 127.0.0.1 as well).
    a("--op", "bind", "--mode", "target", "--tid", "1", "-I", "127.0.0.1")


def operator_insert(
    directory: Path,
    barcode: str,
    address: int,
    size_mb: int | None = None,
    *,
    fresh: bool = True,
) -> None:
    """The operator puts a cartridge into a mail slot: a new one (a fresh image with that
    barcode), or with `fresh=False` one that was taken out before (its image kept)."""
    state = _require(directory)
    image = Path(state.directory) / "tapes" / barcode
    if fresh or not image.exists():
        make_tape(Path(state.directory) / "tapes", barcode, size_mb or state.tape_size_mb)
    _tgtadm(
        state.control_port, "--mode", "logicalunit", "--op", "update", "--tid", "1",
        "--lun", str(state.changer_lun),
        "--params", f"element_type=3,address={address},barcode={barcode},sides=1",
    )  # fmt: skip


def operator_remove(directory: Path, address: int) -> None:
    """The operator takes the cartridge out of a mail slot."""
    state = _require(directory)
    _tgtadm(
        state.control_port, "--mode", "logicalunit", "--op", "update", "--tid", "1",
        "--lun", str(state.changer_lun),
        "--params", f"element_type=3,address={address},clear_slot=1",
    )  # fmt: skip


def drop_sessions(directory: Path) -> int:
    """Close every iSCSI connection of the target (to test reconnects); how many."""
    state = _require(directory)
    out = _tgtadm(state.control_port, "--op", "show", "--mode", "target").stdout
    closed = 0
    sid = None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("I_T nexus:"):
            sid = line.split(":", 1)[1].strip()
        elif line.startswith("Connection:") and sid is not None:
            cid = line.split(":", 1)[1].strip()
            _tgtadm(state.control_port, "--op", "delete", "--mode", "connection", "--tid", "1",
                    "--sid", sid, "--cid", cid, check=False)  # fmt: skip
            closed += 1
    return closed


def stop(directory: Path, timeout: float = 10.0) -> bool:
    """Stop the recorded tgtd: delete its target and system through its own control port,
    then SIGKILL that PID if it is still there. True when a daemon was stopped."""
    directory = directory.resolve()
    state = load_state(directory)
    pid = state.pid if state else None
    if pid is None:
        pidfile = directory / "tgtd.pid"
        if not pidfile.exists():
            return False
        pid = int(pidfile.read_text().strip())
    if not _alive(pid):
        _reap(pid)
        return False
    cport = state.control_port if state else None
    if cport is not None and _is_our_tgtd(pid, cport):
        _tgtadm(cport, "--op", "delete", "--mode", "target", "--tid", "1", "--force", check=False)
        _run("tgtadm", "-C", str(cport), "--op", "delete", "--mode", "system", check=False)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: not _alive(pid), timeout, f"tgtd {pid} to die")
    _reap(pid)
    if cport is not None:
        # tgtd leaves its control socket behind; it was this daemon's own.
        for leftover in (SOCKET_DIR / f"socket.{cport}", SOCKET_DIR / f"socket.{cport}.lock"):
            try:
                leftover.unlink()
            except OSError:
                pass
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def save_state(state: VtlState) -> None:
    path = Path(state.directory) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(path)


def load_state(directory: Path) -> VtlState | None:
    path = directory / STATE_FILE
    if not path.exists():
        return None
    return VtlState(**json.loads(path.read_text()))


def _require(directory: Path) -> VtlState:
    state = load_state(directory.resolve())
    if state is None:
        raise VtlError(f"no VTL state in {directory}")
    return state


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start a private VTL")
    s.add_argument("--dir", default=os.environ.get("REELFS_VTL_DIR", "/tmp/reelfs-vtl"))
    s.add_argument("--port", type=int, default=3261)
    s.add_argument("--control-port", type=int, default=None)
    s.add_argument("--drives", type=int, default=2)
    s.add_argument("--slots", type=int, default=8)
    s.add_argument("--tapes", type=int, default=None, help="data tapes (default: slots - 1)")
    s.add_argument("--tape-size", type=int, default=64, help="MiB per tape")
    s.add_argument("--ie-slots", type=int, default=2)
    s.add_argument("--no-cleaning", action="store_true")
    s.add_argument("--barcode-prefix", default="RL")
    s.add_argument("--target", default="iqn.2024-01.org.reelfs:vtl")
    s.add_argument("--pdu-size", type=int, default=PDU_SIZE)
    s.add_argument(
        "--drive-product", default="VTL-DRIVE", help="INQUIRY product of the drives (16 chars)"
    )
    s.add_argument("--json", action="store_true", help="print the state as JSON")
    t = sub.add_parser("stop", help="stop the VTL started from --dir")
    t.add_argument("--dir", default=os.environ.get("REELFS_VTL_DIR", "/tmp/reelfs-vtl"))
    o = sub.add_parser("operator", help="insert or remove a cartridge at a mail slot")
    o.add_argument("--dir", default=os.environ.get("REELFS_VTL_DIR", "/tmp/reelfs-vtl"))
    o.add_argument("action", choices=["insert", "remove"])
    o.add_argument("address", type=int)
    o.add_argument("barcode", nargs="?")
    args = p.parse_args(argv)
    try:
        if args.cmd == "start":
            state = start(
                Path(args.dir),
                port=args.port,
                control_port=args.control_port,
                drives=args.drives,
                slots=args.slots,
                tapes=args.tapes,
                tape_size_mb=args.tape_size,
                ie_slots=args.ie_slots,
                cleaning=not args.no_cleaning,
                barcode_prefix=args.barcode_prefix,
                target=args.target,
                pdu_size=args.pdu_size,
                drive_product=args.drive_product,
            )
            if args.json:
                print(json.dumps(asdict(state)))
            else:
                print(f"tgtd pid {state.pid}, images in {state.directory}/tapes")
                print(f"changer: {state.changer}")
                for url, el, sn in zip(state.drives, state.drive_elements, state.drive_serials,
                                       strict=True):  # fmt: skip
                    print(f"drive:   {url}  (element {el}, serial {sn})")
                print(f"tapes:   {', '.join(f'{b}@{a}' for b, a in state.tapes.items())}")
                print(f"mail slots: {state.import_export}")
                print("\nreelfs.toml:\n" + state.toml())
        elif args.cmd == "stop":
            print("stopped" if stop(Path(args.dir)) else "not running")
        else:
            if args.action == "insert":
                if not args.barcode:
                    p.error("insert needs a barcode")
                operator_insert(Path(args.dir), args.barcode, args.address)
            else:
                operator_remove(Path(args.dir), args.address)
    except VtlError as e:
        print(f"vtl: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
