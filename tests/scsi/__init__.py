"""Tests of the SCSI drivers (drivers/scsi): decoders, transports, and the tgt VTL."""
