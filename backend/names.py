"""Names are bytes: how a file name or path travels through reelfs without losing one.

Linux names are any bytes but `/` and NUL, UTF-8 or not. Inside reelfs a path is a
`str` that holds its bytes exactly, UTF-8 decoded with `surrogateescape` (what
`os.fsdecode` gives under a UTF-8 locale, whatever the locale is here): a byte that is
not part of valid UTF-8 becomes the lone surrogate U+DC80+byte. That `str` goes back to
the same bytes with `to_bytes`, and is what tarfile, json and sr3 3.3.1 carry.

A lone surrogate cannot go where text must be valid UTF-8, so each boundary converts:

- the catalog and the state databases store a path that is not UTF-8 as a BLOB of its
  bytes, and others as TEXT as they always did (`to_db`, `from_db`); an event's text
  names it with `\\xNN` (`text_of`), its JSON details exactly;
- JSON (posts, `--json`) escapes it as `\\udcNN` (json's default `ensure_ascii`), and
  a `*_b64` field beside carries the bytes for readers that cannot undo that;
- a terminal or a log line gets `printable`: control characters and bytes that are not
  UTF-8 escaped, never raw.
"""

from __future__ import annotations

import base64
import logging


def to_bytes(path: str) -> bytes:
    """The bytes a path stands for."""
    return path.encode("utf-8", "surrogateescape")


def from_bytes(raw: bytes) -> str:
    """The path a name's bytes stand for (lossless: `to_bytes` gives them back)."""
    return raw.decode("utf-8", "surrogateescape")


def to_db(path: str | None) -> str | bytes | None:
    """A path as the catalog and the state databases store it: TEXT when it is valid
    UTF-8 (as every reelfs stored it so far, so keys keep matching old rows), else its
    bytes as a BLOB (SQLite refuses a lone surrogate). Either way the same bytes."""
    if path is None or is_utf8(path):
        return path
    return to_bytes(path)


def from_db(value: bytes | str | None) -> str | None:
    """A path `to_db` stored."""
    if value is None or isinstance(value, str):
        return value
    return from_bytes(bytes(value))


def text_of(message: str) -> str:
    """A message for a TEXT column or a log: each byte of a name that is not UTF-8
    written `\\xNN` (the exact path travels beside it, in JSON details)."""
    if is_utf8(message):
        return message
    return "".join(_surrogate(ch) for ch in message)


def _surrogate(ch: str) -> str:
    c = ord(ch)
    if 0xDC80 <= c <= 0xDCFF:  # a byte that is not UTF-8
        return f"\\x{c - 0xDC00:02x}"
    if 0xD800 <= c <= 0xDFFF:  # a surrogate no byte stands for (not from a name)
        return f"\\u{c:04x}"
    return ch


def is_utf8(path: str) -> bool:
    """Whether a path is valid UTF-8 (holds no escaped byte)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str | bytes) -> str:
    """A path for a terminal or a log line: valid UTF-8 without control characters.

    A control character (C0 and DEL) or a byte that is not UTF-8 becomes `\\xNN`, a
    C1 control character (valid UTF-8, two bytes) `\\u00NN`: no name can move the
    cursor or clear the screen. (Backslashes stay as they are, as in event messages that
    `text_of` wrote; `--json` and its `*_b64` fields are the exact form.)"""
    text = from_bytes(path) if isinstance(path, bytes) else path
    out: list[str] = []
    for ch in text:
        c = ord(ch)
        if 0xD800 <= c <= 0xDFFF:
            out.append(_surrogate(ch))
        elif c < 0x20 or c == 0x7F:
            out.append(f"\\x{c:02x}")
        elif 0x80 <= c < 0xA0:  # C1 controls
            out.append(f"\\u{c:04x}")
        else:
            out.append(ch)
    return "".join(out)


def b64(path: str) -> str:
    """A path's bytes in base64, for the `*_b64` field beside it in JSON."""
    return base64.b64encode(to_bytes(path)).decode("ascii")


def with_b64(record: dict, *keys: str) -> dict:
    """`record` with a `KEY_b64` field beside each path field named (None stays None)."""
    out = dict(record)
    for key in keys:
        value = record.get(key)
        if isinstance(value, str):
            out[f"{key}_b64"] = b64(value)
    return out


class PrintableFormatter(logging.Formatter):
    """A log formatter that writes each message through `printable`: a name in a log
    line never puts a raw control character or a byte that is not UTF-8 into the log
    file or on the terminal (tracebacks after it keep their lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)
