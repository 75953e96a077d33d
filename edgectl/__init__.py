"""edgectl: the on-site controller of a fuel station's forecourt."""

__version__ = "0.1.0"
