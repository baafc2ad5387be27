"""Tests of tape drives, media changers and on-tape formats."""
