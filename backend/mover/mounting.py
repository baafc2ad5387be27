"""Getting a volume into a mover's drive and out again.

`mount` finds the cartridge (a volume the library lacks goes `missing`), moves it into
the drive, loads it in the volume's record mode, and checks its label against the
catalog (backend.tape.layout): a labelled volume must carry its VOL1, a volume the
catalog has blank must be blank (or hold this archive's own uncommitted data); otherwise
the volume goes `noaccess`, with an event, and its work goes elsewhere. `dismount`
unloads and puts the cartridge home, recording the drive's statistics of the mount.
`cleaner_session` is the first session of every mover: a cartridge a crash left in the
drive is unloaded and put home before anything else.
"""

from __future__ import annotations

import time

from backend.catalog import events
from backend.catalog.volumes import MISSING, NOACCESS, VolumeClerk
from backend.mover import cleaning
from backend.mover.context import MoverContext, VolumeUnavailable
from backend.mover.states import Session
from backend.tape.layout import NONE, VolumeFormat, describe, read_bot, volser_for, volume_format
from drivers.tape import ElementType, ErrorClass, NotReadyError, TapeError


class LabelMismatch(VolumeUnavailable):
    """The tape is not what the catalog says: the volume was set `noaccess`."""


class VolumeBusy(VolumeUnavailable):
    """The cartridge is in another drive (being put home, say): its work waits for it."""


class VolumeStuck(VolumeBusy):
    """The changer failed to bring the cartridge to the drive: the volume is `stuck` until
    reconciled, and its work waits for it (or goes to another copy) meanwhile."""


class ChangerFailed(RuntimeError):
    """The changer failed to take a cartridge out of this drive to its slot: the volume
    is `stuck` in the drive. Not the drive's fault: the mover's supervisor restarts it,
    and its cleaner session tries again."""

    def __init__(self, label: str, message: str) -> None:
        super().__init__(message)
        self.label = label


def _stuck(ctx: MoverContext, label: str, where: str, e: TapeError) -> str:
    why = e.message if hasattr(e, "message") else str(e)
    VolumeClerk(ctx.cat).set_stuck(label, where, why)
    msg = f"volume {label} stuck {where}: {why}"
    events.record(
        ctx.cat, "volume_stuck", msg, subject=label, level="error", drive=ctx.name, where=where
    )
    return msg


def mount(ctx: MoverContext, label: str, *, check_label: bool = True) -> None:
    vc = VolumeClerk(ctx.cat)
    vol = vc.get(label)
    if vol is None:
        raise VolumeUnavailable(f"volume {label} is not in the catalog")
    ctx.lm.set_volume(ctx.name, label)
    ctx.mounted = label
    ctx.to(Session.MOUNTING)
    with ctx.changer_lock:
        el = ctx.changer.inventory().find(label)
        if el is None:
            ctx.mounted = None
            ctx.lm.set_volume(ctx.name, None)
            vc.set_state(label, MISSING, "not found in the library")
            events.record(
                ctx.cat,
                "volume_missing",
                "volume not found in the library",
                subject=label,
                level="error",
            )
            raise VolumeUnavailable(f"volume {label} is not in the library")
        if el.address != ctx.address:
            if el.type == ElementType.DRIVE:
                ctx.mounted = None
                ctx.lm.set_volume(ctx.name, None)
                raise VolumeBusy(f"volume {label} is in another drive ({el.address})")
            if el.type == ElementType.SLOT and vol.home != el.address:
                vc.set_home(label, el.address)
            try:
                ctx.changer.move(el.address, ctx.address)
            except TapeError as e:
                # not the drive's fault, and where the cartridge is now is unknown:
                # recorded, kept out of use until reconciled, its work waits
                ctx.mounted = None
                ctx.lm.set_volume(ctx.name, None)
                ctx.to(Session.IDLE)
                where = f"moving from slot {el.address} to drive {ctx.name} ({ctx.address})"
                raise VolumeStuck(_stuck(ctx, label, where, e)) from e
    ctx.drive.load()
    fmt = volume_format(ctx.cat, label)
    # a volume keeps the record size it was started with; foreign ones are read in
    # variable-length mode, whatever their records
    ctx.block_size = (fmt and fmt.block_size) or ctx.config.library.block_size
    ctx.record_mode = 0 if fmt is not None and fmt.foreign else ctx.block_size
    ctx.drive.set_block_size(ctx.record_mode)
    vc.mounted(label)
    ctx.mount_started = time.monotonic()
    ctx.event("mount", f"mounted {label}", volume=label)
    if check_label and fmt is not None:
        _check_label(ctx, fmt)


def _check_label(ctx: MoverContext, fmt: VolumeFormat) -> None:
    """Refuse a volume whose tape is not what the catalog says it is: a labelled one
    must carry its VOL1, one the catalog has blank must be blank (or hold this
    archive's own data, written before a crash and never committed)."""
    if fmt.foreign:
        return
    layout = fmt.layout(ctx.config.library.label_format)
    blank = fmt.label_format is None and fmt.eod_block == 0
    if layout == NONE and not blank:
        return
    bot = read_bot(ctx.drive)
    expected = volser_for(fmt.label)
    ours = ctx.config.archive_id
    vol1 = bot.vol1
    if blank:
        if (
            bot.kind == "blank"
            or (vol1 is not None and vol1.volser == expected and vol1.owner == ours)
            or (bot.kind == "data" and bot.archive_id == ours)
        ):
            return
        _refuse(
            ctx,
            fmt.label,
            f"the catalog has it blank but {describe(bot)}: not overwriting it "
            "(reelfs import-volume adopts a foreign tape)",
        )
    if vol1 is not None and vol1.volser == expected:
        return
    _refuse(ctx, fmt.label, f"{describe(bot)}, expected VOL1 {expected}")


def _refuse(ctx: MoverContext, label: str, why: str) -> None:
    VolumeClerk(ctx.cat).set_state(label, NOACCESS, why)
    events.record(ctx.cat, "label_mismatch", why, subject=label, level="error", drive=ctx.name)
    dismount(ctx)
    raise LabelMismatch(f"volume {label} refused: {why}")


def dismount(ctx: MoverContext) -> None:
    label = ctx.mounted
    if label is None:
        return
    cleaning.check_drive(ctx)
    stats: dict = {}
    try:
        stats = dict(ctx.drive.statistics())
    except TapeError:
        pass
    ctx.to(Session.UNLOADING)
    try:
        ctx.drive.unload()
    except NotReadyError:
        pass
    put_home(ctx, label, None)
    stats["mount_seconds"] = round(time.monotonic() - ctx.mount_started, 3)
    ctx.event("dismount", f"dismounted {label}", volume=label, **stats)
    ctx.mounted = None
    ctx.lm.set_volume(ctx.name, None)
    ctx.to(Session.IDLE)


def put_home(ctx: MoverContext, label: str, source: int | None) -> None:
    """The changer takes the (unloaded) cartridge from the drive to its home slot, or
    to `source`, or to any free slot."""
    ctx.to(Session.UNMOUNTING)
    vc = VolumeClerk(ctx.cat)
    vol = vc.get(label)
    with ctx.changer_lock:
        inv = ctx.changer.inventory()
        candidates = [a for a in (vol.home if vol else None, source) if a is not None]
        empty_slots = [e.address for e in inv.of_type(ElementType.SLOT) if not e.full]
        home = next(
            (a for a in candidates if a in empty_slots),
            empty_slots[0] if empty_slots else None,
        )
        if home is None:
            raise TapeError(f"no free slot to put {label} back", error_class=ErrorClass.DRIVE)
        try:
            ctx.changer.move(ctx.address, home)
        except TapeError as e:
            where = f"in drive {ctx.name} ({ctx.address}), home slot {home}"
            raise ChangerFailed(label, _stuck(ctx, label, where, e)) from e
    if vol is not None and vc.unstick(label, home) is not None:
        events.record(
            ctx.cat,
            "volume_unstuck",
            f"volume {label} is home in slot {home}",
            subject=label,
            drive=ctx.name,
        )
    elif vol is not None and vol.home != home:
        vc.set_home(label, home)


def cleaner_session(ctx: MoverContext) -> None:
    """Put home any cartridge a previous session left in this drive."""
    with ctx.changer_lock:
        el = ctx.changer.inventory().by_address(ctx.address)
    if not el.full:
        return
    ctx.to(Session.CLEANER)
    label = el.barcode or "?"
    ctx.event(
        "cleaner_session",
        f"found {label} in the drive; unloading it",
        level="warning",
        volume=label,
    )
    try:
        ctx.drive.unload()
    except NotReadyError:
        pass  # never loaded, or already unloaded
    ctx.mounted = label
    ctx.lm.set_volume(ctx.name, label)  # nobody is given it until it is home
    put_home(ctx, label, el.source)
    ctx.mounted = None
    ctx.lm.set_volume(ctx.name, None)
    ctx.to(Session.IDLE)
