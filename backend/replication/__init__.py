"""Replication of archive contents over Sarracenia v03 notification messages.

Messages and transport: `message` (v03 messages and topics), `identity` (checksums),
`credentials` (sr3-style credentials file), `broker` (AMQP with publisher confirms),
`outbox` (durable SQLite outbox and its publisher).

Posting: `journal` (the mount's change journal), `poster` (journal -> outbox),
`post_config` (`[post]`/`[serve]`), `filemessages` (messages describing local files),
`watch`/`watch_config` (`reelfs watch` of ordinary directories).

Serving: `http_service` (read-only HTTP over a `DataSource`), `archive_source` (the
archive as one).

Subscribing: `subscribe` (the flow loop), `subscribe_config`, `subscribe_fetch`
(downloads), `subscribe_store` (storing through the mount), `subscribe_state` (winnow,
retry queue, parts), `subscribe_reports`.
"""
