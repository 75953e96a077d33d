"""IFSF over TCP/IP: the pure codec (header, databases, data items, heartbeat, framing)."""
