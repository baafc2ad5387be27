"""The archive's one catalog: namespace, file clerk, volume clerk, request queue, events.

A single SQLite database in WAL mode. Each thread opens its own connection with
`open_catalog`; writers coordinate through short `BEGIN IMMEDIATE` transactions and a busy
timeout. Every state change that must survive a crash is one transaction.
"""

from backend.catalog.db import Catalog, open_catalog

__all__ = ["Catalog", "open_catalog"]
