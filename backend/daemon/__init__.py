"""The archive daemon: the one process that owns an archive's library and cache.

`archive` runs it (movers, library manager, services, control socket), `recovery`
brings the catalog back to a consistent state at start, `create` makes a new archive.
"""
