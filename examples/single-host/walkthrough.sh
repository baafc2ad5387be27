#!/usr/bin/env bash
# A walk-through on one host with the emulated library: write, flush to tape, release,
# recall, then look at what the archive knows. Run as root from anywhere:
#   examples/single-host/walkthrough.sh [WORKDIR]
set -euo pipefail
work=${1:-$(mktemp -d /tmp/reelfs-walkthrough.XXXXXX)}
reelfs() { python3 -m mountfs.cli "$@"; }
cd "$(dirname "$0")/../.."

echo "== an archive with 2 drives and 4 volumes of 256 MiB, in $work"
reelfs init "$work/archive" --drives 2 --volumes 4 --volume-size 256MiB --cache-size 512MiB \
    -o mover.flush_delay=1h
mkdir -p "$work/mnt"
reelfs mount "$work/archive" "$work/mnt"
export REELFS_ARCHIVE=$work/archive   # for the commands that name no path
trap 'reelfs umount "$work/mnt" --no-wait >/dev/null 2>&1 || true' EXIT

echo "== two file families"
for fam in raw sim; do
    mkdir "$work/mnt/$fam"
    setfattr -n user.reelfs.file_family -v "$fam" "$work/mnt/$fam"
    for i in 1 2 3; do
        head -c $((i * 1000000)) /dev/urandom > "$work/mnt/$fam/run$i.dat"
    done
done
sha256sum "$work"/mnt/*/run*.dat > "$work/sums"
getfattr -n user.reelfs.state "$work/mnt/raw/run1.dat"
getfattr -n user.reelfs.bfid "$work/mnt/raw/run1.dat"

echo "== to tape"
reelfs flush --wait "$work/mnt"
getfattr -n user.reelfs.location "$work/mnt/raw/run1.dat"
reelfs volumes

echo "== out of the cache, then back from tape"
reelfs release "$work/mnt"
getfattr -n user.reelfs.state "$work/mnt/sim/run2.dat"
sha256sum -c "$work/sums"
reelfs recall --wait "$work/mnt/raw"

echo "== what the archive did"
reelfs status
reelfs events --limit 20
reelfs check
reelfs umount "$work/mnt"
trap - EXIT
echo "done: $work"
