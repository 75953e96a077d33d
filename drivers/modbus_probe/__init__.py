"""Modbus tank probes and consoles (RTU or TCP): register maps as data, a scheduled bus master."""
