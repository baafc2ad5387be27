"""Sarracenia v03 notification messages as plain dicts: build, serialise, parse, validate.

What goes on the wire follows what stock sr3 (metpx-sr3 3.3.1) sends and accepts (see the
team notes `sarracenia-v03.md`), not the older sr_post(7) text where the two differ:

* the body is one UTF-8 JSON object; the transport content type `application/json` is what
  makes sr3 treat it as v03, so `version` and `conformsTo` (WIS markers) are never emitted;
* times are UTC `YYYYMMDDTHHMMSS[.fraction]` with any number of fraction digits on input;
* identities carry base64 digests; `fileOp` values are strings, flags are `""`;
* the AMQP topic is `<prefix>.<directories of relPath>` with `#`/`*` escaped as sr3 does.

`decode`/`validate` are strict: every problem raises `MessageError` naming the field.
`safe_join` is the only way a relPath from the network may become a local path.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

JSON_CONTENT_TYPE = "application/json"
DEFAULT_TOPIC_PREFIX = "v03"
TOPIC_MAX_BYTES = 255

MANDATORY_FIELDS = ("pubTime", "baseUrl", "relPath")
# Digest methods and the length of their raw digest; values travel base64-encoded.
DIGEST_SIZES = {"sha512": 64, "md5": 16}
IDENTITY_METHODS = frozenset({"sha512", "md5", "arbitrary", "cod", "random"})
FILEOP_KEYS = frozenset({"rename", "remove", "link", "hlink", "directory"})
# fileOp keys whose value is a path; the others are flags whose value is "".
FILEOP_PATH_KEYS = frozenset({"rename", "link", "hlink"})
BLOCK_METHODS = frozenset({"inplace", "partitioned", "separate"})
CONTENT_ENCODINGS = frozenset({"utf-8", "base64", "iso-8859-1"})
# WIS2 markers: sr3 classifies any JSON carrying them as a WIS message, not v03.
FORBIDDEN_FIELDS = ("version", "conformsTo")

_TIME_RE = re.compile(r"^(\d{8})T(\d{6})(?:\.(\d+(?:[eE][-+]?\d+)?))?$")
_MODE_RE = re.compile(r"^[0-7]{1,6}$")


class MessageError(ValueError):
    """An incoming message is not an acceptable v03 notification message."""


# --- times ------------------------------------------------------------------------------


def format_time(ns: int) -> str:
    """Nanoseconds since the epoch -> `YYYYMMDDTHHMMSS.nnnnnnnnn` (UTC, 9 fraction digits).

    sr3 prints a variable number of digits (`f"{t % 1:.9g}"`); a fixed 9 digits is within
    what every sr3 parser accepts and keeps the full nanosecond resolution of st_mtime_ns.
    """
    seconds, frac = divmod(int(ns), 1_000_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{frac:09d}"


def now_time() -> str:
    """The current time in pubTime format."""
    return format_time(time.time_ns())


def parse_time(value: object, field: str = "pubTime") -> int:
    """Parse a v03 time string into nanoseconds since the epoch, or raise `MessageError`.

    Accepts any number of fraction digits, and sr3's exponent quirk: `f"{x:.9g}"` renders a
    fraction below 1e-4 as e.g. `2e-05`, so sr3 can emit `...T011725.2e-05`; like sr3 we read
    the fraction as `float("0." + digits)`.
    """
    if not isinstance(value, str):
        raise MessageError(f"{field}: expected a string, got {type(value).__name__}")
    m = _TIME_RE.match(value)
    if not m:
        raise MessageError(f"{field}: {value!r} is not YYYYMMDDTHHMMSS[.fraction]")
    date, clock, frac = m.groups()
    try:
        fields = (
            int(date[0:4]),
            int(date[4:6]),
            int(date[6:8]),
            int(clock[0:2]),
            int(clock[2:4]),
            int(clock[4:6]),
        )
        # struct_time accepts out-of-range fields; check them against a real calendar.
        time.strptime(date + clock, "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise MessageError(f"{field}: {value!r} is not a valid date and time") from exc
    seconds = calendar.timegm((*fields, 0, 0, 0))
    nanos = 0
    if frac:
        if frac.isdigit():
            nanos = int((frac + "000000000")[:9])
        else:
            nanos = round(float("0." + frac) * 1e9)
    return seconds * 1_000_000_000 + nanos


# --- building ---------------------------------------------------------------------------


def identity_field(method: str, value: str | bytes) -> dict[str, str]:
    """An `identity` object; a bytes value (a raw digest) is base64-encoded as sr3 does."""
    if method not in IDENTITY_METHODS:
        raise MessageError(f"identity: unknown method {method!r}")
    if isinstance(value, bytes):
        value = base64.b64encode(value).decode("ascii")
    return {"method": method, "value": value}


def build_message(
    *,
    base_url: str,
    rel_path: str,
    pub_time: str | None = None,
    identity: Mapping[str, str] | None = None,
    size: int | None = None,
    mtime_ns: int | None = None,
    atime_ns: int | None = None,
    mode: int | str | None = None,
    file_op: Mapping[str, str] | None = None,
    blocks: Mapping[str, Any] | None = None,
    source: str | None = None,
    from_cluster: str | None = None,
    to_clusters: str | None = None,
    content_type: str | None = None,
    report: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a v03 message and validate it; `mode` may be an int (st_mode) or octal string.

    Fields left as None are omitted. `extra` adds other fields (sr3 forwards unknown ones);
    it may not carry `version`/`conformsTo`.
    """
    msg: dict[str, Any] = {
        "pubTime": pub_time or now_time(),
        "baseUrl": base_url,
        "relPath": rel_path,
    }
    if identity is not None:
        msg["identity"] = dict(identity)
    if size is not None:
        msg["size"] = size
    if mtime_ns is not None:
        msg["mtime"] = format_time(mtime_ns)
    if atime_ns is not None:
        msg["atime"] = format_time(atime_ns)
    if mode is not None:
        msg["mode"] = mode if isinstance(mode, str) else f"{mode & 0o7777:o}"
    if file_op is not None:
        msg["fileOp"] = dict(file_op)
    if blocks is not None:
        msg["blocks"] = dict(blocks)
    for key, value in (
        ("source", source),
        ("from_cluster", from_cluster),
        ("to_clusters", to_clusters),
        ("contentType", content_type),
    ):
        if value is not None:
            msg[key] = value
    if report is not None:
        msg["report"] = dict(report)
    if extra:
        msg.update(extra)
    return validate(msg)


def report_field(code: int, message: str, completed_ns: int | None = None) -> dict[str, Any]:
    """A `report` object (`code`, `timeCompleted`, `message`) as sr3's Message.setReport."""
    when = time.time_ns() if completed_ns is None else completed_ns
    return {"code": int(code), "timeCompleted": format_time(when), "message": message}


def make_report(msg: Mapping[str, Any], code: int, text: str) -> dict[str, Any]:
    """A report message about `msg`: the same message plus `report`, inlined `content` removed."""
    out = {k: v for k, v in msg.items() if k != "content"}
    out["report"] = report_field(code, text)
    return validate(out)


# --- serialising and parsing ------------------------------------------------------------


def encode(msg: Mapping[str, Any]) -> bytes:
    """Serialise a message to the JSON body sr3 expects (validated first)."""
    for key in FORBIDDEN_FIELDS:
        if key in msg:
            raise MessageError(f"{key}: never emitted (sr3 would classify the message as WIS)")
    checked = validate(msg)
    return json.dumps(checked, sort_keys=False).encode("utf-8")


def decode(body: bytes | str, content_type: str | None = JSON_CONTENT_TYPE) -> dict[str, Any]:
    """Parse and validate a received body; `content_type` is the AMQP property if known.

    Pass `content_type=None` when the transport has none (e.g. a body read from a file).
    """
    if content_type is not None and content_type.split(";")[0].strip() != JSON_CONTENT_TYPE:
        raise MessageError(f"content type {content_type!r} is not {JSON_CONTENT_TYPE} (not v03)")
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageError(f"body is not UTF-8: {exc}") from exc
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MessageError(f"bad JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise MessageError(f"bad JSON: expected an object, got {type(parsed).__name__}")
    return validate(parsed)


# --- validation -------------------------------------------------------------------------


def _require_str(msg: Mapping[str, Any], key: str) -> str:
    value = msg[key]
    if not isinstance(value, str):
        raise MessageError(f"{key}: expected a string, got {type(value).__name__}")
    if "\x00" in value:
        raise MessageError(f"{key}: contains NUL")
    return value


def _require_int(value: object, field: str, *, minimum: int = 0) -> int:
    # A decimal string is what old posters sent for size; sr3 converts it, so do we.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{field}: expected an integer, got {value!r}")
    if value < minimum:
        raise MessageError(f"{field}: {value} is below {minimum}")
    return value


def check_rel_path(rel_path: object, field: str = "relPath") -> str:
    """Check that a relPath is safe to use under a local root; return it unchanged."""
    if not isinstance(rel_path, str):
        raise MessageError(f"{field}: expected a string, got {type(rel_path).__name__}")
    if not rel_path:
        raise MessageError(f"{field}: empty")
    if "\x00" in rel_path:
        raise MessageError(f"{field}: contains NUL")
    if rel_path.startswith("/"):
        raise MessageError(f"{field}: {rel_path!r} is absolute")
    if any(part == ".." for part in rel_path.split("/")):
        raise MessageError(f"{field}: {rel_path!r} contains '..'")
    if not any(part not in ("", ".") for part in rel_path.split("/")):
        raise MessageError(f"{field}: {rel_path!r} names no file")
    return rel_path


def _check_identity(identity: object) -> dict[str, str]:
    if not isinstance(identity, dict):
        raise MessageError("identity: expected an object with method and value")
    method, value = identity.get("method"), identity.get("value")
    if not isinstance(method, str) or not isinstance(value, str):
        raise MessageError("identity: method and value must be strings")
    if method not in IDENTITY_METHODS:
        raise MessageError(f"identity: unknown method {method!r}")
    if method in DIGEST_SIZES:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MessageError(f"identity: {method} value is not base64") from exc
        if len(raw) != DIGEST_SIZES[method]:
            raise MessageError(
                f"identity: {method} digest is {len(raw)} bytes, expected {DIGEST_SIZES[method]}"
            )
    elif method == "cod" and value not in DIGEST_SIZES:
        raise MessageError(f"identity: cod names unknown algorithm {value!r}")
    return {"method": method, "value": value}


def _check_file_op(file_op: object) -> dict[str, str]:
    if not isinstance(file_op, dict) or not file_op:
        raise MessageError("fileOp: expected a non-empty object")
    for key, value in file_op.items():
        if key not in FILEOP_KEYS:
            raise MessageError(f"fileOp: unknown operation {key!r}")
        if not isinstance(value, str):
            raise MessageError(f"fileOp.{key}: expected a string")
        if "\x00" in value:
            raise MessageError(f"fileOp.{key}: contains NUL")
        if key in FILEOP_PATH_KEYS and not value:
            raise MessageError(f"fileOp.{key}: empty path")
    if "link" in file_op and "hlink" in file_op:
        raise MessageError("fileOp: both link and hlink")
    return dict(file_op)


def _check_blocks(blocks: object, size: int | None) -> dict[str, Any]:
    if not isinstance(blocks, dict):
        raise MessageError("blocks: expected an object")
    method = blocks.get("method")
    if method not in BLOCK_METHODS:
        raise MessageError(f"blocks.method: {method!r} is not one of {sorted(BLOCK_METHODS)}")
    block_size = _require_int(blocks.get("size"), "blocks.size", minimum=1)
    number = _require_int(blocks.get("number"), "blocks.number")
    manifest_in = blocks.get("manifest")
    if not isinstance(manifest_in, dict) or not manifest_in:
        raise MessageError("blocks.manifest: expected a non-empty object")
    manifest: dict[int, dict[str, Any]] = {}
    for key, entry in manifest_in.items():
        # JSON object keys are strings; sr3 turns them back into ints on import.
        index = key if isinstance(key, int) else None
        if isinstance(key, str) and key.isascii() and key.isdigit():
            index = int(key)
        if index is None or isinstance(index, bool) or index < 0:
            raise MessageError(f"blocks.manifest: bad block number {key!r}")
        if not isinstance(entry, dict) or not isinstance(entry.get("identity"), str):
            raise MessageError(f"blocks.manifest[{index}]: needs size and identity")
        entry_size = _require_int(entry.get("size"), f"blocks.manifest[{index}].size")
        if entry_size > block_size:
            raise MessageError(f"blocks.manifest[{index}].size exceeds blocks.size")
        manifest[index] = {"size": entry_size, "identity": entry["identity"]}
    if number not in manifest:
        raise MessageError(f"blocks.number {number} is not in the manifest")
    if size is not None and manifest[number]["size"] != size:
        raise MessageError(f"size {size} differs from manifest size of block {number}")
    out = dict(blocks)
    out.update({"method": method, "size": block_size, "number": number, "manifest": manifest})
    return out


def _check_report(report: object) -> dict[str, Any]:
    if not isinstance(report, dict):
        raise MessageError("report: expected an object")
    code = report.get("code")
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
        raise MessageError(f"report.code: {code!r} is not an HTTP-style status code")
    if "timeCompleted" not in report:
        raise MessageError("report: missing timeCompleted")
    parse_time(report["timeCompleted"], "report.timeCompleted")
    if not isinstance(report.get("message", ""), str):
        raise MessageError("report.message: expected a string")
    return dict(report)


def validate(msg: Mapping[str, Any]) -> dict[str, Any]:
    """Check a message and return a normalised copy (sr3's renames of old field names applied,
    numeric strings and manifest keys made integers). Raises `MessageError`."""
    if not isinstance(msg, Mapping):
        raise MessageError("message: expected an object")
    out = dict(msg)
    # Old names sr3 still accepts (and renames the same way).
    if "integrity" in out and "identity" not in out:
        out["identity"] = out.pop("integrity")
    if "retPath" in out and "retrievePath" not in out:
        out["retrievePath"] = out.pop("retPath")
    for key in MANDATORY_FIELDS:
        if key not in out:
            raise MessageError(f"missing mandatory field {key}")
    parse_time(_require_str(out, "pubTime"), "pubTime")
    base_url = _require_str(out, "baseUrl")
    if not urlsplit(base_url).scheme or any(c.isspace() for c in base_url):
        raise MessageError(f"baseUrl: {base_url!r} is not a URL")
    check_rel_path(out["relPath"])
    if "retrievePath" in out:
        _require_str(out, "retrievePath")
    if "identity" in out:
        out["identity"] = _check_identity(out["identity"])
    if "size" in out:
        out["size"] = _require_int(out["size"], "size")
    for key in ("mtime", "atime"):
        if key in out:
            parse_time(out[key], key)
    if "mode" in out:
        mode = out["mode"]
        if not isinstance(mode, str) or not _MODE_RE.match(mode):
            raise MessageError(f"mode: {mode!r} is not an octal string")
    if "fileOp" in out:
        out["fileOp"] = _check_file_op(out["fileOp"])
    if "blocks" in out:
        out["blocks"] = _check_blocks(out["blocks"], out.get("size"))
    for key in ("source", "from_cluster", "to_clusters", "contentType", "rename"):
        if key in out:
            _require_str(out, key)
    if "content" in out:
        content = out["content"]
        if (
            not isinstance(content, dict)
            or content.get("encoding") not in CONTENT_ENCODINGS
            or not isinstance(content.get("value"), str)
        ):
            raise MessageError("content: expected {encoding: utf-8|base64|iso-8859-1, value}")
    if "report" in out:
        out["report"] = _check_report(out["report"])
    return out


# --- topics -----------------------------------------------------------------------------


def topic_for(rel_path: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """The AMQP routing key sr3 derives: prefix plus the directories of relPath.

    The file name is not part of it (a file at the root has topic `v03`). `#` and `*` in a
    word are sent as `%23` and `%22` (sic, sr3's choice), a byte of a directory name that
    is not UTF-8 (a routing key is UTF-8) as `%NN`; keys over 255 bytes are cut on a
    UTF-8 character boundary. Dots inside a directory name are not escaped (as in sr3), so
    they add topic levels.
    """
    words = [w for w in prefix.split(".") if w] + [w for w in rel_path.split("/")[:-1] if w]
    return truncate_topic(
        ".".join(_topic_word(w.replace("#", "%23").replace("*", "%22")) for w in words)
    )


def _topic_word(word: str) -> str:
    return "".join(f"%{ord(c) - 0xDC00:02X}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in word)


def truncate_topic(topic: str) -> str:
    """Cut a routing key to 255 bytes without splitting a UTF-8 character."""
    raw = topic.encode("utf-8")
    if len(raw) <= TOPIC_MAX_BYTES:
        return topic
    return raw[:TOPIC_MAX_BYTES].decode("utf-8", errors="ignore")


def decode_topic(topic: str) -> list[str]:
    """Split a received routing key into words, undoing the `#`/`*` escapes."""
    return [w.replace("%23", "#").replace("%22", "*") for w in topic.split(".")]


def binding_key(subtopic: str = "#", prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """`<prefix>.<subtopic>`: the key a queue is bound with (`v03.#` by default)."""
    return f"{prefix}.{subtopic}" if subtopic else prefix


# --- paths ------------------------------------------------------------------------------


def download_url(msg: Mapping[str, Any]) -> str:
    """baseUrl joined to retrievePath (or relPath) with exactly one `/`, as sr3 does."""
    base = msg["baseUrl"]
    tail = msg.get("retrievePath") or msg["relPath"]
    return base.rstrip("/") + "/" + tail.lstrip("/")


def safe_join(root: str | os.PathLike[str], rel_path: str, *, follow_final: bool = True) -> Path:
    """Join a network-supplied relPath under `root`, refusing anything that escapes it.

    Rejects what `check_rel_path` rejects, then resolves symbolic links of the existing
    part of the path: a link anywhere that leads out of the real root is refused too. With
    `follow_final=False` the last component is not resolved (for removing or replacing a
    link itself). The check is made at call time; a caller racing a hostile local writer
    must also open with care.
    """
    check_rel_path(rel_path)
    real_root = os.path.realpath(root)
    parts = [p for p in rel_path.split("/") if p not in ("", ".")]
    if follow_final:
        resolved = os.path.realpath(os.path.join(real_root, *parts))
    else:
        parent = os.path.realpath(os.path.join(real_root, *parts[:-1]))
        resolved = os.path.join(parent, parts[-1])
        if not _inside(real_root, parent):
            raise MessageError(f"relPath: {rel_path!r} leads out of {root}")
    if not _inside(real_root, resolved):
        raise MessageError(f"relPath: {rel_path!r} leads out of {root}")
    return Path(resolved)


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def rename_old_relpath(msg: Mapping[str, Any], source_base_dir: str | None = None) -> str | None:
    """The old relPath of a rename message, or None if it cannot be mapped.

    sr3 puts the poster's absolute old path in `fileOp.rename`. It is mapped back by
    removing the poster's base directory if known, else the path of baseUrl (sr3's own rule).
    """
    file_op = msg.get("fileOp") or {}
    old = file_op.get("rename")
    if not old:
        return None
    prefixes = []
    if source_base_dir:
        prefixes.append(source_base_dir)
    url_path = urlsplit(msg["baseUrl"]).path
    if len(url_path) > 1:
        prefixes.append(url_path)
    for prefix in prefixes:
        prefix = prefix.rstrip("/") + "/"
        if old.startswith(prefix):
            rel = old[len(prefix) :]
            try:
                return check_rel_path(rel, "fileOp.rename")
            except MessageError:
                return None
    if not old.startswith("/"):
        try:
            return check_rel_path(old, "fileOp.rename")
        except MessageError:
            return None
    return None
