"""How a FUSE operation answers: its errno, never an exception escaping to pyfuse3.

`fuse_op` wraps each operation of `mountfs.fs.ReelFS`: an `FsError` becomes its errno, an
OSError its own, a full catalog file system ENOSPC, and anything unexpected EIO with a
logged traceback, because an exception escaping a pyfuse3 handler would kill the mount
(and leave ENOTCONN behind). The daemon's injected faults (tests) enter here too.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from backend.catalog.db import is_disk_full
from backend.errors import FsError

log = logging.getLogger("reelfs.fs")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def fuse_op(fn: F) -> F:
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: Any, *args: Any, **kw: Any) -> Any:
        try:
            if self.daemon.faults and self.daemon.take_fault(name):
                raise RuntimeError(f"injected fault in {name}")
            return await fn(self, *args, **kw)
        except pyfuse3.FUSEError:
            raise
        except FsError as e:
            if e.errno in (errno.ENOENT, errno.ENODATA, errno.EEXIST, errno.ENOTEMPTY):
                log.debug("%s: %s", name, e)
            else:
                log.info("%s%r: %s", name, _short(args), e.strerror)
            raise pyfuse3.FUSEError(e.errno) from None
        except OSError as e:
            log.warning("%s%r: %s", name, _short(args), e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception as e:
            if is_disk_full(e):  # the catalog's file system: no change was made
                log.error("%s%r: the catalog's file system is full: %s", name, _short(args), e)
                raise pyfuse3.FUSEError(errno.ENOSPC) from None
            log.exception("unexpected error in %s%r; answering EIO", name, _short(args))
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def _short(args: tuple) -> tuple:
    return tuple(
        a if not isinstance(a, bytes | bytearray) or len(a) < 64 else f"<{len(a)} bytes>"
        for a in args
        if not isinstance(a, pyfuse3.RequestContext)
    )
