#!/usr/bin/env bash
# Two sites, one broker: archive A posts what is written on its mount, `reelfs subscribe`
# stores it into archive B, which serves and re-posts it. Run as root from anywhere:
#   examples/replication/two-sites/walkthrough.sh [WORKDIR]
# Everything (broker, archives, mounts, subscriber) lives in WORKDIR and is stopped by PID
# at the end; see README.md beside this file.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
work=${1:-$(mktemp -d /tmp/reelfs-two-sites.XXXXXX)}
reelfs() { (cd "$repo" && python3 -m mountfs.cli "$@"); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...: poll a condition, never a fixed sleep
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@"; do
        [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $what" >&2; exit 1; }
        sleep 0.2
    done
}

echo "== a private RabbitMQ in $work/broker (users admin, alice, bob)"
"$repo/examples/replication/start-broker" "$work/broker" > /dev/null
. "$work/broker/broker.env"
export REELFS_CREDENTIALS
sub_pid=
cleanup() {
    [ -n "$sub_pid" ] && kill "$sub_pid" 2>/dev/null && wait "$sub_pid" 2>/dev/null || true
    for s in A B; do reelfs umount "$work/mnt$s" --no-wait > /dev/null 2>&1 || true; done
    "$repo/examples/replication/stop-broker" "$work/broker" > /dev/null || true
}
trap cleanup EXIT
broker=127.0.0.1:$REELFS_BROKER_PORT
port_a=$(free_port); port_b=$(free_port)

echo "== archive A posts as alice to xs_alice and serves itself on :$port_a"
reelfs init "$work/siteA" --volumes 4 --volume-size 256MiB --cache-size 512MiB \
    -o mover.flush_delay=1h \
    -o "post.broker=\"amqp://alice@$broker/\"" -o 'post.exchange="xs_alice"' \
    -o "post.base_url=\"http://127.0.0.1:$port_a/\"" -o 'post.cluster="siteA"' \
    -o 'post.blocksize="16MiB"' -o "serve.listen=\"127.0.0.1:$port_a\""
echo "== archive B re-posts as admin (to xpublic, set by the subscriber) and serves on :$port_b"
reelfs init "$work/siteB" --volumes 4 --volume-size 256MiB --cache-size 512MiB \
    -o mover.flush_delay=1h \
    -o "post.broker=\"amqp://admin@$broker/\"" -o 'post.cluster="siteB"' \
    -o "post.base_url=\"http://127.0.0.1:$port_b/\"" -o "serve.listen=\"127.0.0.1:$port_b\""
mkdir -p "$work/mntA" "$work/mntB"
reelfs mount "$work/siteA" "$work/mntA"
reelfs mount "$work/siteB" "$work/mntB"

echo "== the exchanges exist before anyone binds (posters declare them on first use)"
(cd "$repo" && python3 - "$broker") <<'PY'
import sys
from backend.replication.broker import Broker
with Broker(f"amqp://admin@{sys.argv[1]}/") as b:
    for x in ("xs_alice", "xpublic", "xr_alice"):
        b.declare_exchange(x)
PY

echo "== reelfs subscribe at site B"
sed -e "s|@PORT@|$REELFS_BROKER_PORT|" -e "s|@WORK@|$work|g" "$here/siteB-subscribe.toml" \
    > "$work/siteB-subscribe.toml"
# exec: the background job is the subscriber itself, so $! is the PID to stop it by
(cd "$repo" && exec python3 -m mountfs.cli subscribe --config "$work/siteB-subscribe.toml") \
    > "$work/siteB-subscribe.log" 2>&1 &
sub_pid=$!
wait_until 60 "the subscriber" grep -q "subscribed to" "$work/siteB-subscribe.log"

echo "== write on A; it appears at B, verified"
mkdir "$work/mntA/raw"
head -c 1000000 /dev/urandom > "$work/mntA/raw/run1.dat"
head -c 40000000 /dev/urandom > "$work/mntA/raw/big.dat"   # announced in 16 MiB parts
(cd "$work/mntA" && sha256sum raw/*.dat) > "$work/sums"
wait_until 120 "the files at B" test -f "$work/mntB/from-a/raw/big.dat"
(cd "$work/mntB/from-a" && sha256sum -c "$work/sums")
cat "$work/siteB-arrivals.log"

echo "== a rename and a removal follow"
mv "$work/mntA/raw/run1.dat" "$work/mntA/raw/run1-final.dat"
rm "$work/mntA/raw/big.dat"
wait_until 60 "the rename at B" test -f "$work/mntB/from-a/raw/run1-final.dat"
wait_until 60 "the removal at B" test ! -e "$work/mntB/from-a/raw/big.dat"
ls -l "$work/mntB/from-a/raw"

echo "== at B the replica is an archive file like any other: to tape"
reelfs flush --wait "$work/mntB/from-a"
getfattr -n user.reelfs.state "$work/mntB/from-a/raw/run1-final.dat"

echo "== what B's subscriber did"
grep -E " (201|304) " "$work/siteB-subscribe.log" | cut -d' ' -f5-
kill "$sub_pid"; wait "$sub_pid" || true; sub_pid=
echo "done: $work"
