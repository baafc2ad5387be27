"""reelfs: the archive core."""
