"""What is on a reelfs tape and how the archive reads it: the layout, the walk over a
volume's tape files, tape read, rebuilding the catalog from tapes (`rebuild`), and
adopting foreign volumes (`foreign`)."""
