"""reelfs.toml's sections as models, and `Config`, the validated configuration the archive's
code reads (``config.cache.size``, ``config.families``, ``config.catalog_path``...).

Defaults are written as the file would write them (``"4GiB"``) and validated like any
value. [post] and [serve] pass through untouched here: the mount checks them
(backend.replication.post_config), so that `reelfs init` can write a half-made [post] that the
user completes before mounting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    StrictInt,
    ValidationInfo,
    model_validator,
)

from backend.catalog.families import FAMILY_RE, MAX_COPIES, MAX_WIDTH

from .errors import ConfigError
from .units import Duration, Size
from .values import Bool, Fraction, Model, PositiveInt, integer

#: the cache directory `reelfs init` makes in the archive; any other must exist already
DEFAULT_CACHE_DIR = "cache"


def _family_name(name: str) -> str:
    if not FAMILY_RE.fullmatch(name):
        raise ValueError(
            f"file family {name!r}: 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_family_name(name: str) -> str:
    try:
        return _family_name(name)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _archive_id(v: Any) -> str:
    if isinstance(v, str) and re.fullmatch(r"[0-9A-F]{8}", v):
        return v
    raise ValueError(f"expected 8 hex digits, got {v!r}")


def _as_text(v: Any) -> str:
    return str(v)  # a name is only ever shown: `name = 2024` is taken as written


def _cache_path(v: Any, info: ValidationInfo) -> Path:
    """Relative to the archive; a directory elsewhere must exist: creating it would put
    the cache wherever a typo or an unmounted disk leads, maybe on the root file system."""
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a path, got {v!r}")
    archive: Path = info.context["archive"]
    path = archive / v  # an absolute v stays itself
    if path != archive / DEFAULT_CACHE_DIR and not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise ValueError(f"{path} {what}: create it (or mount its file system) first")
    return path


def _block_size(n: int) -> int:
    if n < 512 or n % 512 or n > 16 * 1024 * 1024:
        raise ValueError(f"a multiple of 512 between 512 and 16MiB, got {n}")
    return n


def _cache_size(n: int) -> int:
    if n < 1024 * 1024:
        raise ValueError(f"at least 1MiB, got {n}")
    return n


class ArchiveSection(Model):
    """`[archive]`: the archive's id (fixed at init) and name."""

    id: Annotated[str, PlainValidator(_archive_id)] = Field(
        description="8 hex digits, set by reelfs init"
    )
    name: Annotated[str, PlainValidator(_as_text)] = "reelfs"


class CacheConfig(Model):
    """`[cache]`: where the staging cache is, its size and watermarks."""

    path: Annotated[Path, PlainValidator(_cache_path)] = Field(DEFAULT_CACHE_DIR)
    size: Annotated[Size, AfterValidator(_cache_size)] = Field("4GiB")
    high_watermark: Fraction = 0.9
    low_watermark: Fraction = 0.75
    full_timeout: Duration = Field("60s")
    #: how long an open() waits for a recall, and a blocked recall stays queued
    recall_timeout: Duration = Field("10min")

    @model_validator(mode="after")
    def _watermarks(self) -> CacheConfig:
        if self.low_watermark >= self.high_watermark:
            raise ValueError(
                f"low_watermark ({self.low_watermark}) must be below high_watermark "
                f"({self.high_watermark})"
            )
        return self


class LibraryConfig(Model):
    """`[library]`: the tape library, its record size and label format."""

    type: Literal["emulated", "scsi"] = "emulated"
    path: str = "library"  # emulated
    block_size: Annotated[Size, AfterValidator(_block_size)] = Field("256KiB")
    label_format: Literal["none", "ansi"] = "none"
    changer: str | None = None  # scsi
    drives: list[str] | None = None
    drive_elements: list[StrictInt] | None = None
    default_capacity: Size = 0  # 0: the largest capacity the catalog knows
    cleaning_uses: PositiveInt = 50

    @property
    def spec(self) -> dict[str, Any]:
        """The library's table, for `drivers.library.open_library`."""
        return self.model_dump(exclude_none=True)


class MoverConfig(Model):
    """`[mover]`: when tapes are dismounted and files flushed, batch limits, retries."""

    idle_dismount: Duration = Field("60s")
    flush_delay: Duration = Field("30s")
    batch_files: PositiveInt = 1000
    batch_bytes: Size = Field("16GiB")
    retries: PositiveInt = 3
    # a worker (a mover) that crashes is restarted, at most this many times in the window;
    # the next crash takes its drive down with the reason
    max_restarts: PositiveInt = 3
    restart_window: Duration = Field("10m")


class AggregationConfig(Model):
    """Small files go to tape together, one pax archive with many members per tape file."""

    threshold: Size = Field("256MiB")  # smaller files are aggregated (0: none is)
    size: Size = Field("4GiB")  # a family's small files are due at this total; caps a tape file
    age: Duration = Field(description="[mover] flush_delay")  # ...or once the oldest waited this
    files: PositiveInt = 10_000  # the most files in one tape file of small files

    @model_validator(mode="after")
    def _size_holds_threshold(self) -> AggregationConfig:
        if self.threshold and self.size < self.threshold:
            raise ValueError(f"size ({self.size}) must be at least threshold ({self.threshold})")
        return self


class RecallSection(Model):
    """`[recall]`: what an open of a file on tape only does."""

    on_open: Literal["block", "refuse"] = "block"


class MountConfig(Model):
    """`[mount]`: the FUSE mount's options."""

    allow_other: Bool = False
    cache_timeout: Duration = Field("300s")
    max_file_size: Size | None = None  # None: the capacity of the largest volume
    readahead: Size = Field("1MiB")


Width = integer(
    1, MAX_WIDTH, expected=f"an integer from 1 to {MAX_WIDTH} (volumes written at once)"
)
Copies = integer(
    1, MAX_COPIES, expected=f"an integer from 1 to {MAX_COPIES} (tape copies of each file)"
)


class FamilySection(Model):
    """`[families.NAME]`: one file family's width, copies and verification."""

    width: Width = 1
    verify: Bool = False  # read every tape file back once written
    copies: Copies | None = None  # None: whatever user.reelfs.copies says


FAMILY_KEYS = frozenset(FamilySection.model_fields)


class ConfigFile(Model):
    """The whole file, its defaults merged in (`backend.config.load`)."""

    archive: ArchiveSection
    cache: CacheConfig
    library: LibraryConfig
    mover: MoverConfig
    aggregation: AggregationConfig
    recall: RecallSection
    mount: MountConfig
    families: dict[Annotated[str, AfterValidator(_family_name)], FamilySection] = {}
    post: Any = None  # checked by backend.replication.post_config when the archive is mounted
    serve: Any = None

    @model_validator(mode="before")
    @classmethod
    def _age_follows_flush_delay(cls, data: Any) -> Any:
        """[aggregation] age defaults to [mover] flush_delay, whatever that is set to."""
        if isinstance(data, dict):
            agg, mover = data.get("aggregation"), data.get("mover")
            if isinstance(agg, dict) and "age" not in agg and isinstance(mover, dict):
                data = {**data, "aggregation": {**agg, "age": mover.get("flush_delay", "30s")}}
        return data

    def config(self, archive: Path, raw: dict[str, Any]) -> Config:
        return Config(
            archive=archive,
            archive_id=self.archive.id,
            name=self.archive.name,
            cache=self.cache,
            library=self.library,
            mover=self.mover,
            recall_on_open=self.recall.on_open,
            mount=self.mount,
            families={name: f.width for name, f in self.families.items()},
            raw=raw,
            aggregation=self.aggregation,
            verify_families=frozenset(name for name, f in self.families.items() if f.verify),
            family_copies={
                name: f.copies for name, f in self.families.items() if f.copies is not None
            },
        )


@dataclass(frozen=True)
class Config:
    """An archive's configuration, validated: what the daemon, the CLI and the tools read."""

    archive: Path
    archive_id: str
    name: str
    cache: CacheConfig
    library: LibraryConfig
    mover: MoverConfig
    recall_on_open: str
    mount: MountConfig
    aggregation: AggregationConfig
    families: dict[str, int] = field(default_factory=dict)  # family -> width
    raw: dict[str, Any] = field(default_factory=dict)  # the file, defaults merged in
    verify_families: frozenset[str] = frozenset()  # read-after-write verify ([families.X])
    # tape copies of each file, for the families whose table sets `copies`
    family_copies: dict[str, int] = field(default_factory=dict)

    @property
    def catalog_path(self) -> Path:
        return self.archive / "catalog.db"

    @property
    def run_dir(self) -> Path:
        return self.archive / "run"

    @property
    def log_dir(self) -> Path:
        return self.archive / "log"

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "reelfsd.sock"
