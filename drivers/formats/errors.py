"""The exceptions of the on-tape formats.

A malformed archive or label on a cartridge is a media problem for scheduling purposes (read
another copy, mark the volume suspect), so `FormatError` is a `MediaError`. A source that
ends before the size announced in a member's header is the caller's problem, not the tape's:
`ShortSourceError` is not a `TapeError`.
"""

from __future__ import annotations

from drivers.tape import MediaError


class FormatError(MediaError):
    """The bytes read are not a valid archive or label of the expected format.

    `offset` is the byte offset from the start of the tape file (or stream) where the
    problem was found, when known.
    """

    def __init__(self, message: str, *, offset: int | None = None, **kw) -> None:
        if offset is not None:
            message = f"{message} (at byte {offset})"
        super().__init__(message, **kw)
        self.offset = offset


class LabelError(FormatError):
    """An 80-byte ANSI label is missing or malformed; the message says which field."""


class ShortSourceError(Exception):
    """The source of a member ended before the size its header announced.

    The tape file being written is unusable: the caller abandons it.
    """

    def __init__(self, name: str, expected: int, got: int) -> None:
        super().__init__(f"source of {name!r} ended after {got} of {expected} bytes")
        self.name = name
        self.expected = expected
        self.got = got


class WriterStateError(RuntimeError):
    """A writer was used after `finish()` or after a failure left its tape file unusable."""
