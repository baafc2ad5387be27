"""Reading tar headers (v7, ustar, GNU, pax) from a `ByteSource` with Python's `tarfile`.

`tarfile.TarInfo.fromtarfile` parses one member's headers (pax extended and global headers,
GNU long names included) from anything that looks like a `TarFile`: a `fileobj` with `read`
and `tell`, `encoding`, `errors`, the archive's global `pax_headers` and `offset`. `HeaderReader`
is that object, over a `ByteSource`; it refuses oversized header reads so that a corrupt size
field cannot make tarfile allocate gigabytes. The member's data is never read through here:
the archive readers stream it from the source themselves.
"""

from __future__ import annotations

import re
import tarfile

from drivers.formats.errors import FormatError
from drivers.formats.records import ByteSource

#: the most a member's headers (pax records, GNU long names) may take
MAX_HEADER_BYTES = 16 << 20

_PAX_TIME = re.compile(r"(-?)(\d{1,20})(?:\.(\d*))?")


class HeaderReader:
    """The `TarFile` stand-in `TarInfo.fromtarfile` reads headers through."""

    encoding = "utf-8"
    errors = "surrogateescape"

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.fileobj = self
        self.pax_headers: dict[str, str] = {}  # the archive's global pax headers
        self.offset = 0  # set by tarfile: where the next header starts

    # fileobj interface used by tarfile
    def read(self, n: int) -> bytes:
        if n > MAX_HEADER_BYTES:
            raise FormatError(
                f"tar header announces {n} bytes of extended header data (limit"
                f" {MAX_HEADER_BYTES})",
                offset=self.source.position,
            )
        return self.source.read(n)

    def tell(self) -> int:
        return self.source.position

    def next_header(self) -> tarfile.TarInfo | None:
        """The next member's headers, or None at the end of the archive (a zero block, or
        the end of the source at a member boundary). The source is left at the data."""
        start = self.source.position
        try:
            info = tarfile.TarInfo.fromtarfile(self)  # type: ignore[arg-type]
        except tarfile.EOFHeaderError:
            return None  # a zero block: end of archive
        except tarfile.EmptyHeaderError:
            return None  # the source ended where a header would start
        except tarfile.TruncatedHeaderError:
            raise FormatError("truncated tar header", offset=start) from None
        except tarfile.SubsequentHeaderError as e:
            # the block tarfile refused is the last one it read
            at = max(self.source.position - tarfile.BLOCKSIZE, start)
            raise FormatError(
                f"invalid tar header after the extended header that starts at byte {start}: {e}",
                offset=at,
            ) from None
        except tarfile.HeaderError as e:
            raise FormatError(f"invalid tar header: {e}", offset=start) from None
        except RecursionError:
            raise FormatError("too many chained extended headers", offset=start) from None
        except (ValueError, UnicodeError, OverflowError) as e:
            raise FormatError(f"invalid tar header: {e}", offset=start) from None
        if info.sparse is not None and "GNU.sparse.name" in info.pax_headers:
            # a long or non-ASCII name also has a `path` record, which tarfile applies
            # after GNU.sparse.name when it comes later; the real name is the sparse one
            info.name = info.pax_headers["GNU.sparse.name"]
        if info.size < 0:
            raise FormatError(
                f"tar member {info.name!r} has negative size {info.size}", offset=start
            )
        if self.offset < self.source.position:
            raise FormatError(f"tar member {info.name!r} has an invalid size", offset=start)
        return info

    def skip_to_next(self, what: str) -> None:
        """Skip what is left of the current member's data and padding."""
        gap = self.offset - self.source.position
        if gap > 0:
            self.source.skip(gap, what)


def mtime_ns(info: tarfile.TarInfo) -> int:
    """The member's mtime in nanoseconds, exact when a pax `mtime` record holds it."""
    text = info.pax_headers.get("mtime")
    if text is None:
        return int(info.mtime) * 1_000_000_000
    return parse_pax_time(text, info.name)


def parse_pax_time(text: str, name: str = "") -> int:
    m = _PAX_TIME.fullmatch(text.strip())
    if not m:
        raise FormatError(f"invalid pax mtime {text!r} of member {name!r}")
    sign, secs, frac = m.groups()
    ns = int(secs) * 1_000_000_000 + int(((frac or "") + "000000000")[:9])
    return -ns if sign else ns


def format_pax_time(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    secs, frac = divmod(abs(ns), 1_000_000_000)
    return f"{sign}{secs}.{frac:09d}" if frac else f"{sign}{secs}"
