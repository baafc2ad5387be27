"""The staging cache: file data on local disk between the mount and tape.

`store` keeps the cache files and their byte count, `staging` the open files and their
modification sessions (the write path), `eviction` what may leave the cache, and
`checksum` the adler32 and CRC-32C sums computed on the way in and out.
"""
