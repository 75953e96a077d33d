"""Wayne DART dispenser protocol: codec, line driver and pump simulator."""
