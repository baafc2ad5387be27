"""The tape library as the archive steers it: scheduling, volume selection, recall policy,
the operator's library jobs, cleaning, and the library without the daemon."""
