"""Replication of archive contents over Sarracenia v03 notification messages.

Modules: `message` (v03 messages and topics), `identity` (checksums), `credentials`
(sr3-style credentials file), `broker` (AMQP with publisher confirms), `outbox` (durable
SQLite outbox and its publisher), `filemessages` (messages describing local files),
`watch` and `watch_config` (`reelfs watch` of ordinary directories and its TOML
configuration), `http_service` (read-only HTTP data service over a `DataSource`).
"""
