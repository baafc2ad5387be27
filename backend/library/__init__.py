"""The tape library as the archive steers it: scheduling (the library manager), small-file
aggregation, volume selection, recall policy, the operator's library jobs, reconciling
with the changer, cleaning, and the library without the daemon."""
