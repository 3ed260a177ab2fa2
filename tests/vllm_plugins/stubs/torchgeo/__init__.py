"""Stand-in for torchgeo (see ../README.md)."""
