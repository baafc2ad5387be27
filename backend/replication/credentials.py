"""The sr3-style credentials file: passwords kept out of configuration files and logs.

One URL with its password per line, e.g.::

    amqp://alice:s3cret@broker.example:5672/
    http://reader:pw@127.0.0.1:8080/

Blank lines and lines starting with `#` are ignored; words after the URL (sr3 options such
as `ssh_keyfile=...`) are kept but unused. Special characters in a user or password are
percent-encoded, as in sr3. Configuration names a URL without password
(`amqp://alice@host/`) and the password is looked up here by scheme, user, host and port.

The file is `$REELFS_CREDENTIALS` or `~/.config/reelfs/credentials.conf`. A file that group
or others may read is refused. Passwords never appear in a repr or in `redact_url`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

ENV_VAR = "REELFS_CREDENTIALS"
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "http": 80, "https": 443, "sftp": 22, "ftp": 21}


class CredentialsError(Exception):
    """The credentials file is unusable (permissions, syntax) or lacks a needed entry."""


def default_path() -> Path:
    """`$REELFS_CREDENTIALS`, else `~/.config/reelfs/credentials.conf`."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path.home() / ".config" / "reelfs" / "credentials.conf"


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***` (safe for logs and error messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = quote(unquote(parts.username or ""), safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


@dataclass(frozen=True)
class Credential:
    """One entry of the credentials file. The password is left out of repr()."""

    scheme: str
    user: str
    host: str
    port: int | None
    password: str = field(repr=False)
    options: tuple[str, ...] = ()

    def url(self, *, with_password: bool = False) -> str:
        """The entry as a URL, without the password unless asked for."""
        user = quote(self.user, safe="")
        if with_password:
            user += ":" + quote(self.password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{user}@{host}{port}/"


def _port(scheme: str, port: int | None) -> int | None:
    return port if port is not None else DEFAULT_PORTS.get(scheme)


def parse_url_parts(url: str) -> tuple[str, str | None, str | None, str, int | None]:
    """(scheme, user, password, host, port) of a URL, user/password percent-decoded."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.hostname:
        raise CredentialsError(f"not a URL with a host: {redact_url(url)!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise CredentialsError(f"bad port in {redact_url(url)!r}") from exc
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.scheme.lower(), user, password, parts.hostname.lower(), port


class Credentials:
    """The entries of one credentials file, searchable by URL."""

    def __init__(self, entries: list[Credential], path: Path | None = None) -> None:
        self.entries = entries
        self.path = path

    def __repr__(self) -> str:
        return f"Credentials({self.path}, {len(self.entries)} entries)"

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *, missing_ok: bool = True):
        """Read a credentials file (default `default_path()`).

        A missing file gives empty credentials when `missing_ok`. A file whose mode lets
        group or others in is refused with a message that names the fix.
        """
        p = Path(path) if path is not None else default_path()
        try:
            st = p.stat()
        except FileNotFoundError:
            if missing_ok:
                return cls([], p)
            raise CredentialsError(f"credentials file {p} does not exist") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialsError(
                f"credentials file {p} has mode {stat.S_IMODE(st.st_mode):03o}: group and "
                f"others must have no access; run: chmod 600 {p}"
            )
        entries = []
        for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            try:
                scheme, user, password, host, port = parse_url_parts(words[0])
            except CredentialsError as exc:
                raise CredentialsError(f"{p}:{lineno}: {exc}") from None
            if user is None or password is None:
                raise CredentialsError(f"{p}:{lineno}: entry has no user:password")
            entries.append(Credential(scheme, user, host, port, password, tuple(words[1:])))
        return cls(entries, p)

    def lookup(
        self, scheme: str, user: str | None, host: str, port: int | None = None
    ) -> Credential | None:
        """The first entry matching scheme, host and port (defaults filled in) and user.

        With `user=None`, the first entry for that scheme/host/port (sr3 allows the broker
        URL to name only the host when the file has one user for it).
        """
        scheme = scheme.lower()
        host = host.lower()
        want_port = _port(scheme, port)
        for entry in self.entries:
            if entry.scheme != scheme or entry.host != host:
                continue
            if _port(entry.scheme, entry.port) != want_port:
                continue
            if user is None or entry.user == user:
                return entry
        return None

    def lookup_url(self, url: str) -> Credential | None:
        """The entry for a URL such as `amqp://alice@host:5672/` (a password in it wins)."""
        scheme, user, password, host, port = parse_url_parts(url)
        if password is not None and user is not None:
            return Credential(scheme, user, host, port, password)
        return self.lookup(scheme, user, host, port)

    def require(self, url: str) -> Credential:
        """Like `lookup_url` but raising a clear error when no password is known."""
        found = self.lookup_url(url)
        if found is None:
            raise CredentialsError(
                f"no password for {redact_url(url)} in {self.path or default_path()}"
            )
        return found

    def http_users(self, host: str, port: int | None, scheme: str = "http") -> dict[str, str]:
        """user -> password of the entries for an HTTP service at host:port (basic auth)."""
        want = _port(scheme, port)
        return {
            e.user: e.password
            for e in self.entries
            if e.scheme == scheme and e.host == host.lower() and _port(e.scheme, e.port) == want
        }
