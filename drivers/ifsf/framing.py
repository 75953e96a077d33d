"""One direction of an IFSF TCP link cut into messages by M_Lg, whatever the segments.

A segment may hold several messages, or a piece of one: `StreamFramer.feed` takes bytes as
they arrive and hands back every message completed so far.

Resynchronisation policy. M_Lg is the only boundary mark TCP gives, so:
  * a message whose M_Lg frames it but whose contents are unreadable (an undefined message
    type, a DB_Ad_Lg past its end, items that do not tile the body) comes back as one
    `Malformed` item; the stream stays in step and the next message is read after it;
  * an M_Lg above `max_length` means the boundaries are lost (a peer out of step, or not
    speaking IFSF): `feed` raises `FramingLost`, keeps nothing, and raises it again on every
    later feed until `reset()`. The link layer drops the connection and opens a new one
    (each IFSF link is one-way and long-lived, so a fresh connection starts at a message
    boundary). Guessing a boundary inside the bytes could read a sale's amount as a header.
"""

from __future__ import annotations

from drivers.ifsf.codec import MAX_M_LG, FramingLost, Malformed, Message, decode


class StreamFramer:
    """Sans-I/O framer for the bytes one TCP connection delivers."""

    def __init__(self, max_length: int = MAX_M_LG) -> None:
        self.max_length = max_length
        self._buffer = bytearray()
        self._lost: FramingLost | None = None

    @property
    def pending(self) -> int:
        """Bytes held for a message not complete yet."""
        return len(self._buffer)

    @property
    def lost(self) -> bool:
        return self._lost is not None

    def feed(self, data: bytes | bytearray) -> list[Message | Malformed]:
        """Messages completed by `data`, in order. Raises FramingLost (whose `decoded` holds
        the items completed before the bad header) when the stream cannot be framed."""
        if self._lost is not None:
            raise FramingLost(str(self._lost), code=self._lost.code)
        self._buffer += data
        found: list[Message | Malformed] = []
        while True:
            try:
                used, item = decode(self._buffer, max_length=self.max_length)
            except FramingLost as exc:
                self._lost = exc
                self._buffer.clear()
                exc.decoded = found
                raise
            if item is None:
                return found
            del self._buffer[:used]
            found.append(item)

    def reset(self) -> None:
        """Forget everything: a new connection starts at a message boundary."""
        self._buffer.clear()
        self._lost = None
