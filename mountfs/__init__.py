"""reelfs: the FUSE front end and the command line."""
