"""What is on a reelfs tape and how the archive reads it: layout, aggregation, tape read,
rebuilding the catalog from tapes, and adopting foreign volumes."""
