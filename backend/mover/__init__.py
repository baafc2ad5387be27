"""Movers: one thread per tape drive, moving data between the cache and tape in CTA-style
sessions."""
