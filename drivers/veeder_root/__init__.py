"""Veeder-Root TLS tank gauge consoles (and the many ATGs that emulate their serial protocol)."""
