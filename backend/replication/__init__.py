"""Replication of archive contents over Sarracenia v03 notification messages.

Messages and transport: `message` (v03 messages and topics), `identity` (checksums),
`credentials` (sr3-style credentials file), `broker` (AMQP with publisher confirms),
`outbox` (durable SQLite outbox and its publisher).

Posting: `journal` (the mount's change journal), `poster` (journal -> outbox),
`filemessages` (messages describing local files), `watch` (the engine) and
`watch_service` (`reelfs watch` of ordinary directories).

Serving: `http_service` (read-only HTTP over a `DataSource`), `archive_source` (the
archive as one).

Subscribing: the package `subscribe` (`reelfs subscribe`: sr3's flow, one module per
step, with its downloads, storing through the mount, and reports).

Their configurations (`[post]` and `[serve]` of reelfs.toml, the subscribe and watch
files) are typed models in backend.config (`post`, `subscribe`, `watch`, and
`replication` for what the last two share).

Shared by both foreground services: `running` (logging, signals, exit codes). Every SQL
statement is in `backend.catalog`: `outbox`, `journal`, `subscriptions` (a subscriber's
state DB), `watching` (a watcher's), `statedb` (their connections).
"""
