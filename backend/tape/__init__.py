"""What is on a reelfs tape and how the archive reads it: layout, aggregation, tape read,
the walk over a volume's tape files, rebuilding the catalog from tapes (`rebuild`), and
adopting foreign volumes (`foreign`)."""
