"""The operator's commands: each written once, run in the daemon when the archive is
mounted and on the archive directly when it is not."""
