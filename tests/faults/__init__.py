"""Fault tests: the archive under failures, on the emulated library."""
