"""Device protocol drivers: each speaks one protocol and imports nothing from edgectl."""
