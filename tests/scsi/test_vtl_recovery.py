"""When things break: a process killed with a tape in a drive, a dropped iSCSI session, a
target that stops answering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from drivers.scsi import ScsiTapeDrive, open_drive, open_library, return_cartridges
from drivers.scsi.device import TransportError
from drivers.tape import ElementType, RecoverableError

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    from drivers.scsi import open_library
    changer, d0, d1, home = sys.argv[1:5]
    lib = open_library(changer, [d0, d1])
    lib.changer.move(int(home), 501)
    drive = lib.drives[501]
    drive.load()
    drive.write_block(b"written before the crash")
    drive.write_filemarks(1)
    print("loaded", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_tape_left_in_a_drive_by_a_crash_goes_home(vtl):
    home = vtl.tapes["RL0005"]
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, vtl.changer, *vtl.drives, str(home)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == "loaded", proc.stderr
    assert proc.returncode == -signal.SIGKILL

    lib = open_library(vtl.changer, vtl.drives)
    try:
        inv = lib.changer.inventory()
        left = inv.by_address(501)
        assert left.full and left.barcode == "RL0005" and left.source == home
        assert lib.drives[501].volume == "RL0005"
        returned = return_cartridges(lib)
        assert [(r.barcode, r.drive_element, r.slot) for r in returned] == [("RL0005", 501, home)]
        inv = lib.changer.inventory()
        assert inv.find("RL0005").address == home
        assert not any(e.full for e in inv.of_type(ElementType.DRIVE))
        # what the crashed process wrote is on the tape
        lib.changer.move(home, 500)
        drive = lib.drives[500]
        drive.load()
        assert drive.read_block(4096) == b"written before the crash"
        drive.unload()
        lib.changer.move(500, home)
    finally:
        lib.close()


def test_dropped_session_is_re_established(vtl, vtl_ops, library):
    drive = library.drives[500]
    assert isinstance(drive, ScsiTapeDrive)
    before = drive.device.reconnects
    assert vtl_ops.drop_sessions(Path(vtl.directory)) >= 3
    st = drive.status()  # TEST UNIT READY is safe to resend
    assert not st.loaded
    assert drive.device.reconnects == before + 1
    inv = library.changer.inventory()  # READ ELEMENT STATUS too
    assert len(inv.of_type(ElementType.DRIVE)) == 2
    assert library.changer.device.reconnects >= 1


def test_a_write_cut_by_a_dropped_session_loses_the_position(vtl, vtl_ops, library):
    library.changer.move(vtl.tapes["RL0004"], 500)
    drive = library.drives[500]
    drive.load()
    drive.write_block(b"one")
    vtl_ops.drop_sessions(Path(vtl.directory))
    with pytest.raises(TransportError) as e:
        drive.write_block(b"two")
    assert e.value.position_lost
    with pytest.raises(RecoverableError, match="position unknown"):
        drive.read_position()
    drive.locate(1)  # a new session; the driver knows where it is again
    drive.write_block(b"two")
    drive.rewind()
    assert [drive.read_block(10), drive.read_block(10)] == [b"one", b"two"]


def test_a_target_that_stops_answering_times_out(vtl):
    drive = open_drive(vtl.drives[1])
    drive.device.reconnect_for = 1.0
    drive.device.connect_timeout = 1.0
    os.kill(vtl.pid, signal.SIGSTOP)
    try:
        with pytest.raises(TransportError):
            drive.device.transfer(bytes(6), timeout=1.0)
    finally:
        os.kill(vtl.pid, signal.SIGCONT)
    drive.device.reconnect_for = 30.0
    drive.device.connect_timeout = 10.0
    assert not drive.status().ready  # the next command logs in again
    drive.close()
