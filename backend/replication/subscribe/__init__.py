"""`reelfs subscribe --config FILE`: one hop of replication into an archive.

sr3's flow in small steps, a module each: `gather` (a durable queue bound to `exchange`
with `topic_prefix.subtopic`), `filter` (decode and validate, loop prevention, source
check, accept/reject), work (`dispatch`: per-path ordering and the worker pool; `worker`:
winnow, then `fileops`, `files` or `blocks`), report (`reports`); `flow` is the loop that
runs them, `retry` the durable retry queue, `housekeeping` the state DB's upkeep. The
archive itself re-posts what is stored (its poster, with the upstream routing this
subscriber hands over through `expect_origin`, see `store`); the subscriber publishes
only reports.

A message is acknowledged only once stored or queued in the durable retry queue (the
state DB, `backend.catalog.subscriptions`); a kill -9 leaves the message unacknowledged
and the temp file recorded, so the restart resumes it and nothing partial is ever visible
under a final name. Failed transfers are retried with exponential backoff; after
`retry.attempts` the message is given up and reported. When the archive is unmounted,
messages are held (not acked) until it is back.

Also here: `config` (the TOML file), `fetch` (HTTP and `file:` downloads), `streams`
(the parallel transfers), `keys` (content and winnow keys), `work` (what the steps pass
along), `run` (`run_subscriber`, what the command line calls). Nothing is imported here,
so that reading one module (the configuration, say) does not load the whole flow.
"""
