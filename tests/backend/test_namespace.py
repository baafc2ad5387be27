"""POSIX namespace rules in the catalog, without FUSE."""

from __future__ import annotations

import errno
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.catalog import open_catalog
from backend.catalog.db import Catalog
from backend.catalog.integrity import integrity_check
from backend.catalog.namespace import RENAME_EXCHANGE, RENAME_NOREPLACE, Namespace
from backend.catalog.schema import ROOT_INODE
from backend.errors import FsError

DIR = stat.S_IFDIR | 0o755
REG = stat.S_IFREG | 0o644


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    c = open_catalog(tmp_path / "catalog.db", create=True)
    yield c
    c.close()


def err(fn, *a) -> int:
    with pytest.raises(FsError) as e:
        fn(*a)
    return e.value.errno


def test_create_lookup_path_and_links(cat: Catalog) -> None:
    ns = Namespace(cat)
    d = ns.create(ROOT_INODE, b"d", DIR, 0, 0)
    f = ns.create(d.id, b"f", REG, 1, 2)
    assert ns.lookup(d.id, b"f").id == f.id
    assert ns.path_of(f.id) == "/d/f"
    assert ns.resolve("/d/f").id == f.id and ns.resolve("d/../d/f").id == f.id
    assert ns.get(ROOT_INODE).nlink == 3
    assert err(ns.create, d.id, b"f", REG, 0, 0) == errno.EEXIST
    assert err(ns.create, f.id, b"x", REG, 0, 0) == errno.ENOTDIR
    assert err(ns.create, d.id, b"x" * 256, REG, 0, 0) == errno.ENAMETOOLONG
    assert err(ns.create, d.id, b"a/b", REG, 0, 0) == errno.EINVAL
    ns.link(f.id, ROOT_INODE, b"hard")
    assert ns.get(f.id).nlink == 2
    assert {i.id for i in ns.subtree(ROOT_INODE)} == {ROOT_INODE, d.id, f.id}
    assert err(ns.link, d.id, ROOT_INODE, b"dl") == errno.EPERM
    assert ns.unlink(d.id, b"f").nlink == 1
    assert err(ns.rmdir, ROOT_INODE, b"hard") == errno.ENOTDIR
    assert integrity_check(cat) == ["1 regular file without data version"]


def test_setgid_directories_pass_their_group(cat: Catalog) -> None:
    ns = Namespace(cat)
    d = ns.create(ROOT_INODE, b"g", DIR | stat.S_ISGID, 0, 50)
    sub = ns.create(d.id, b"sub", DIR, 10, 10)
    f = ns.create(d.id, b"f", REG, 10, 10)
    assert sub.gid == 50 and sub.mode & stat.S_ISGID
    assert f.gid == 50 and not f.mode & stat.S_ISGID


def test_rename_rules(cat: Catalog) -> None:
    ns = Namespace(cat)
    a = ns.create(ROOT_INODE, b"a", DIR, 0, 0)
    b = ns.create(ROOT_INODE, b"b", DIR, 0, 0)
    ns.create(b.id, b"inside", DIR, 0, 0)
    x = ns.create(ROOT_INODE, b"x", stat.S_IFLNK | 0o777, 0, 0, target=b"t")
    assert err(ns.rename, ROOT_INODE, b"a", a.id, b"self", 0) == errno.EINVAL
    assert err(ns.rename, ROOT_INODE, b"a", ROOT_INODE, b"b", 0) == errno.ENOTEMPTY
    assert err(ns.rename, ROOT_INODE, b"x", ROOT_INODE, b"a", 0) == errno.EISDIR
    assert err(ns.rename, ROOT_INODE, b"a", ROOT_INODE, b"x", 0) == errno.ENOTDIR
    assert err(ns.rename, ROOT_INODE, b"a", ROOT_INODE, b"b", RENAME_NOREPLACE) == errno.EEXIST
    assert err(ns.rename, ROOT_INODE, b"a", ROOT_INODE, b"zz", RENAME_EXCHANGE) == errno.ENOENT
    ns.rename(ROOT_INODE, b"a", b.id, b"a2", 0)
    assert ns.get(b.id).nlink == 4 and ns.get(ROOT_INODE).nlink == 3
    ns.rename(b.id, b"a2", ROOT_INODE, b"x", RENAME_EXCHANGE)
    assert ns.lookup(ROOT_INODE, b"x").id == a.id and ns.lookup(b.id, b"a2").id == x.id
    assert ns.get(b.id).nlink == 3 and ns.get(ROOT_INODE).nlink == 4
    replaced = ns.rename(b.id, b"a2", ROOT_INODE, b"y", 0)
    assert replaced is None
    empty = ns.create(ROOT_INODE, b"empty", DIR, 0, 0)
    replaced = ns.rename(ROOT_INODE, b"x", ROOT_INODE, b"empty", 0)
    assert replaced is not None and replaced.id == empty.id and replaced.nlink == 0
    assert integrity_check(cat) == []


def test_xattrs(cat: Catalog) -> None:
    ns = Namespace(cat)
    d = ns.create(ROOT_INODE, b"d", DIR, 0, 0)
    ns.set_xattr(d.id, b"user.reelfs.file_family", b"raw", create=False, replace=False)
    ns.set_xattr(d.id, b"user.other", b"not inherited", create=False, replace=False)
    child = ns.create(d.id, b"c", DIR, 0, 0)
    assert ns.list_xattrs(child.id) == [b"user.reelfs.file_family"]

    def set_(name: bytes, create: bool, replace: bool) -> None:
        ns.set_xattr(d.id, name, b"v", create=create, replace=replace)

    assert err(set_, b"user.other", True, False) == errno.EEXIST
    assert err(set_, b"user.none", False, True) == errno.ENODATA
    assert err(ns.remove_xattr, d.id, b"user.none") == errno.ENODATA
