"""Identities: streaming digests as sr3 encodes them, fixed methods, block identities."""

from __future__ import annotations

import base64
import hashlib

import pytest

from backend.replication import identity as ident
from backend.replication.message import MessageError


def test_sha512_of_file_is_base64_of_digest(tmp_path) -> None:
    data = b"hello\n" * 400_000  # > 2 chunks of 1 MiB
    p = tmp_path / "f"
    p.write_bytes(data)
    got = ident.identity_of_file(p)
    assert got == {
        "method": "sha512",
        "value": base64.b64encode(hashlib.sha512(data).digest()).decode(),
    }
    assert ident.verify_file(p, got)
    p.write_bytes(data + b"!")
    assert not ident.verify_file(p, got)


def test_md5_and_chunks_agree(tmp_path) -> None:
    chunks = [b"a" * 10, b"", b"b" * 7]
    got = ident.identity_of_chunks(chunks, "md5")
    assert base64.b64decode(got["value"]) == hashlib.md5(b"a" * 10 + b"b" * 7).digest()


def test_fixed_methods_do_not_read(tmp_path) -> None:
    missing = tmp_path / "does-not-exist"
    assert ident.identity_of_file(missing, "arbitrary", arbitrary_value="v1") == {
        "method": "arbitrary",
        "value": "v1",
    }
    assert ident.identity_of_file(missing, "cod", cod_algorithm="md5") == {
        "method": "cod",
        "value": "md5",
    }
    with pytest.raises(MessageError):
        ident.identity_of_file(missing, "arbitrary")
    with pytest.raises(MessageError):
        ident.identity_of_file(missing, "crc32")


def test_block_identities_cover_exactly_each_block(tmp_path) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    p = tmp_path / "f"
    p.write_bytes(data)
    blocks = ident.block_identities(p, 4096)
    assert [(b.number, b.offset, b.size) for b in blocks] == [
        (0, 0, 4096),
        (1, 4096, 4096),
        (2, 8192, 2048),
    ]
    for b in blocks:
        expect = hashlib.sha512(data[b.offset : b.offset + b.size]).digest()
        assert base64.b64decode(b.identity) == expect
    # frozen extent: a growing file is described up to the size that was stat'ed
    assert [b.size for b in ident.block_identities(p, 4096, file_size=5000)] == [4096, 904]


def test_block_count_edges() -> None:
    assert ident.block_count(0, 10) == 1
    assert ident.block_count(10, 10) == 1
    assert ident.block_count(11, 10) == 2
    with pytest.raises(ValueError):
        ident.block_count(1, 0)
