"""The sr3-style credentials file: lookup, permission refusal, redaction."""

from __future__ import annotations

import os

import pytest

from backend.replication.credentials import Credentials, CredentialsError, redact_url


def write(path, text: str, mode: int = 0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_lookup_by_scheme_user_host_port(tmp_path) -> None:
    p = write(
        tmp_path / "credentials.conf",
        "# comment\n\n"
        "amqp://alice:a%40pw@Broker.Example:5672/\n"
        "amqp://bob:bpw@broker.example/ some_option=1\n"
        "http://reader:rpw@127.0.0.1:8080/\n",
    )
    creds = Credentials.load(p)
    alice = creds.lookup_url("amqp://alice@broker.example/")  # default port 5672
    assert alice is not None and alice.password == "a@pw"
    bob = creds.lookup("amqp", "bob", "broker.example", 5672)
    assert bob is not None and bob.password == "bpw" and bob.options == ("some_option=1",)
    assert creds.lookup("amqp", "alice", "broker.example", 5673) is None
    assert creds.lookup("amqps", "alice", "broker.example") is None
    assert creds.lookup("amqp", None, "broker.example").user == "alice"
    assert creds.http_users("127.0.0.1", 8080) == {"reader": "rpw"}
    with pytest.raises(CredentialsError, match=r"no password for amqp://carol@broker\.example/"):
        creds.require("amqp://carol@broker.example/")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_refuses_file_readable_by_others(tmp_path, mode: int) -> None:
    p = write(tmp_path / "credentials.conf", "amqp://a:b@h/\n", mode)
    with pytest.raises(CredentialsError) as info:
        Credentials.load(p)
    text = str(info.value)
    assert str(p) in text
    assert f"chmod 600 {p}" in text
    assert "b@h" not in text


def test_env_var_and_missing_file(tmp_path, monkeypatch) -> None:
    p = write(tmp_path / "c.conf", "amqp://a:b@h/\n")
    monkeypatch.setenv("REELFS_CREDENTIALS", str(p))
    assert Credentials.load().lookup("amqp", "a", "h").password == "b"
    monkeypatch.setenv("REELFS_CREDENTIALS", str(tmp_path / "nope"))
    assert Credentials.load().entries == []
    with pytest.raises(CredentialsError, match="does not exist"):
        Credentials.load(missing_ok=False)


def test_bad_lines_are_reported_without_password(tmp_path) -> None:
    p = write(tmp_path / "c.conf", "amqp://alice@h/\n")
    with pytest.raises(CredentialsError, match=r"c.conf:1: entry has no user:password"):
        Credentials.load(p)


def test_passwords_never_in_repr_or_redacted_urls(tmp_path) -> None:
    p = write(tmp_path / "c.conf", "amqp://alice:TopSecret@h:5672/\n")
    creds = Credentials.load(p)
    entry = creds.entries[0]
    assert "TopSecret" not in repr(entry)
    assert "TopSecret" not in repr(creds)
    assert "TopSecret" not in entry.url()
    assert "TopSecret" in entry.url(with_password=True)
    assert redact_url("amqp://alice:TopSecret@h:5672/v") == "amqp://alice:***@h:5672/v"
    assert redact_url("/plain/path") == "/plain/path"
