"""`reelfs rebuild-catalog --from-tapes`: an archive whose catalog is lost comes back from
its labelled volumes, every file byte-identical, new writes appending where they should."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tests.archive import file_of, init_archive, mount, reelfs, tape_locations


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_rebuild_catalog_from_tapes(tmp_path: Path) -> None:
    archive = init_archive(
        tmp_path / "a",
        volumes=8,
        volume_size="8MiB",
        extra=["--label-format", "ansi"],
        options={"aggregation.threshold": "256KiB", "mover.batch_files": 40},
    )
    m = mount(archive, tmp_path / "mnt")
    try:
        digests: dict[str, str] = {}
        for fam in ("raw", "sim"):
            (m.mnt / fam).mkdir()
            os.setxattr(m.mnt / fam, "user.reelfs.file_family", fam.encode())
            d = m.mnt / fam / "run"  # inherits the family
            d.mkdir()
            for i in range(180):
                # every 20th above the aggregation threshold: a tape file of its own
                size = 300_000 if i % 20 == 0 else 1000 + (i * 7919) % 60_000
                p = d / f"{fam}-{i:03d}.dat"
                p.write_bytes(file_of(size, hash(fam) % 100 + i))
        m.flush()
        rewritten = m.mnt / "raw" / "run" / "raw-007.dat"
        rewritten.write_bytes(b"version two")  # a new version; the old one stays on tape
        m.flush(rewritten)
        for p in m.mnt.rglob("*.dat"):
            digests[str(p.relative_to(m.mnt))] = sha(p)
        used = {tape_locations(m, m.mnt / rel)[0].split(":")[0] for rel in digests}
        assert len(used) >= 4  # several volumes, two families
        before = {v["label"]: v for v in m.json("volumes")}
        m.umount()
    finally:
        m.stop()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{archive}/catalog.db{suffix}").unlink(missing_ok=True)

    rep = json.loads(
        reelfs("rebuild-catalog", "--from-tapes", "--archive", str(archive), "--json").stdout
    )
    assert rep["files"] == 360 and rep["copies"] == 360
    assert rep["versions"] == 361  # the first version of the rewritten file, deleted
    assert rep["cached"] == 360 and rep["lost_and_found"] == 0
    assert rep["volumes_scanned"] == 8 and rep["other_archives"] == 0

    m = mount(archive, tmp_path / "mnt")
    try:
        assert m.cli("check", "--archive", str(archive)).returncode == 0
        after = {v["label"]: v for v in m.json("volumes")}
        for label in used:
            for key in ("state", "family", "eod_block", "next_fileno", "files"):
                assert after[label][key] == before[label][key], (label, key)
        assert os.getxattr(m.mnt / "sim" / "run", "user.reelfs.file_family") == b"sim"
        info = m.json("info", str(m.mnt / "raw" / "run" / "raw-007.dat"))
        assert info["version"] == 2
        # appends go after what is on tape (a wrong end of data would overwrite files)
        extra = m.mnt / "raw" / "run" / "later.dat"
        extra.write_bytes(file_of(50_000, 4242))
        m.flush(extra)
        # every file back from tape, byte-identical
        m.release()
        m.cli("recall", "--wait", "--timeout", "300", str(m.mnt))
        for rel, digest in digests.items():
            assert sha(m.mnt / rel) == digest, rel
        assert extra.read_bytes() == file_of(50_000, 4242)
    finally:
        m.stop()
