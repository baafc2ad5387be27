"""Creating an archive: the directory, `reelfs.toml`, the catalog and, for the embedded
default, the emulated library with its blank volumes. A SCSI library is only asked what
its drives are (LTO drives get 1 MiB tape blocks); its tapes are taken in at the first
mount."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend import config as cfgmod
from backend.cache.store import fs_smaller_than
from backend.catalog import events, meta
from backend.catalog.db import open_catalog
from backend.errors import ArchiveError
from backend.library.reconcile import reconcile_library
from backend.permissions import DIR_MODE, private_umask
from backend.tape.limits import check_max_file_size, largest_file, object_cost
from drivers.scsi.identity import is_lto
from drivers.scsi.library import open_drive


@dataclass
class InitOptions:
    """What `reelfs init` was asked for, and the notes of what it decided."""

    drives: int = 2
    volumes: int = 8
    volume_size: int = 2 * 1024**3
    cache_size: int | None = None
    name: str | None = None
    library: str = "emulated"
    changer: str | None = None
    drive_urls: list[str] = field(default_factory=list)
    label_format: str = "none"
    block_size: int | None = None
    label_prefix: str = "RF"
    cleaning: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # more [section] keys
    notes: list[str] = field(default_factory=list)  # what init decided on its own, for the user
    warnings: list[str] = field(default_factory=list)  # what the user should fix, for stderr


#: tape block sizes: the default, and LTO's (its drives stream best with large blocks)
DEFAULT_BLOCK = 256 * 1024
LTO_BLOCK = 1024 * 1024


def probe_block_size(drive_urls: list[str]) -> tuple[int, str]:
    """The block size for these drives, and why: 1 MiB when every drive says it is LTO.

    An unreachable drive is no reason to refuse creating the archive (the library may be
    switched on later): the default is kept and the note says so."""
    products = []
    for url in drive_urls:
        try:
            drive = open_drive(url)
        except Exception as exc:  # whatever failed, the default stands and the note says why
            return DEFAULT_BLOCK, f"block_size 256KiB: could not ask drive {url} ({exc})"
        try:
            products.append((str(drive.identity), is_lto(drive.identity)))
        finally:
            drive.close()
    if products and all(lto for _, lto in products):
        return LTO_BLOCK, f"block_size 1MiB: LTO drive(s) ({products[0][0]})"
    return DEFAULT_BLOCK, f"block_size 256KiB: drive(s) {', '.join(p for p, _ in products)}"


def volume_labels(prefix: str, n: int) -> list[str]:
    width = max(6 - len(prefix), len(str(n)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]


def init_archive(path: Path, opts: InitOptions) -> cfgmod.Config:
    path = Path(path).absolute()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ArchiveError(f"{path} exists and is not an empty directory")
    if opts.library == "emulated":
        if not 1 <= opts.drives <= 64:
            raise ArchiveError(f"--drives: 1 to 64, got {opts.drives}")
        if not 1 <= opts.volumes <= 100_000:
            raise ArchiveError(f"--volumes: 1 to 100000, got {opts.volumes}")
        if opts.volume_size < 1024 * 1024:
            raise ArchiveError(f"--volume-size: at least 1MiB, got {opts.volume_size}")
    elif opts.library == "scsi":
        if not opts.changer or not opts.drive_urls:
            raise ArchiveError("--library scsi needs --changer URL and at least one --drive URL")
    else:
        raise ArchiveError(f"--library: 'emulated' or 'scsi', got {opts.library!r}")
    if not opts.label_prefix.isalnum() or (
        not opts.label_prefix.isupper() and not (opts.label_prefix.isdigit())
    ):
        raise ArchiveError(
            f"--label-prefix: upper-case letters and digits, got {opts.label_prefix!r}"
        )

    library: dict[str, Any] = {"type": opts.library, "label_format": opts.label_format}
    if opts.block_size:
        library["block_size"] = opts.block_size
    elif opts.library == "scsi" and "block_size" not in opts.extra.get("library", {}):
        library["block_size"], note = probe_block_size(opts.drive_urls)
        opts.notes.append(note)
    if opts.library == "emulated":
        library["path"] = "library"
    else:
        library["changer"] = opts.changer
        library["drives"] = list(opts.drive_urls)
        library["default_capacity"] = opts.volume_size
    raw: dict[str, Any] = {
        "archive": {"id": secrets.token_hex(4).upper(), "name": opts.name or path.name},
        "cache": {"size": opts.cache_size or max(4 * 1024**3, 0)},
        "library": library,
    }
    for section, values in opts.extra.items():
        raw.setdefault(section, {}).update(values)
    if opts.library == "emulated":
        raw["library"].pop("default_capacity", None)
    config = cfgmod.build(path, raw)  # validate before anything touches the disk
    if opts.library == "emulated":  # its volumes are known now; a SCSI library's at mount
        lib = config.library
        limit = largest_file(
            opts.volume_size,
            lib.block_size,
            layout=lib.label_format,
            object_cost=object_cost(lib.type),
        )
        check_max_file_size(config.mount.max_file_size, limit)
    path.parent.mkdir(parents=True, exist_ok=True)  # the user's own, with the user's umask
    with private_umask():  # all below the archive directory: its user's alone
        path.mkdir(exist_ok=True)
        os.chmod(path, DIR_MODE)  # also an empty directory given to init
        _populate(path, config, raw, opts)
    return config


def _populate(path: Path, config: cfgmod.Config, raw: dict[str, Any], opts: InitOptions) -> None:
    """reelfs.toml, the directories, the catalog and the emulated library of a new archive."""
    (path / cfgmod.CONFIG_NAME).write_text(
        "# reelfs archive configuration: see reelfs.conf(5)\n\n" + cfgmod.dump(raw)
    )
    for d in (config.run_dir, config.log_dir, config.cache.path):
        d.mkdir(parents=True, exist_ok=True)
    cat = open_catalog(config.catalog_path, create=True)
    try:
        meta.set_archive_id(cat, config.archive_id)
        meta.mark_clean_stop(cat)  # nothing to recover in a new archive
        small = fs_smaller_than(config.cache.path, config.cache.size)
        if small is not None:
            opts.warnings.append(small)
            events.record(
                cat, "cache_fs_small", small, subject=str(config.cache.path), level="warning"
            )
        if opts.library == "emulated":
            from drivers.emulated import create_library, open_library

            labels = volume_labels(opts.label_prefix, opts.volumes)
            cleaning = [f"CLN{i:03d}" for i in range(1, opts.cleaning + 1)]
            lib_dir = path / "library"
            create_library(
                lib_dir,
                drives=opts.drives,
                slots=len(labels) + len(cleaning) + max(2, opts.volumes // 4),
                volumes=labels,
                capacity=opts.volume_size,
                cleaning=cleaning,
            )
            lib = open_library(lib_dir)
            try:
                reconcile_library(
                    cat, lib.changer, media_type="emulated", default_capacity=opts.volume_size
                )
            finally:
                lib.close()
    finally:
        cat.close()
