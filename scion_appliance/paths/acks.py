"""Data acknowledgements: the end-to-end signal that a path still delivers the data sent on it.

A sender sees its probes, but not its data arriving. So the gateway that receives sealed data (envelope
types 4 and 5) answers with a small sealed acknowledgement (envelope type 6, ``MSG_ACK``):

    plaintext = acked counter (8, LE) | received on this arrival path (4, LE)      (12 bytes, 44 sealed)

- The acked counter is the envelope counter of the data message that prompted the ack; the sender maps
  it back to the path it chose for that message (``SendLog``), so an ack proves one path's round trip
  and gives a data RTT sample.
- "Received" is the receiver's running count (mod 2^32) of data messages that arrived on this path from
  this peer; with the sender's own running count of messages sent on the path it gives the data loss
  of the forward direction (``PathQuality.data_acked``).
- Rate: at most one ack per ``ACK_INTERVAL`` per (peer, arrival path); the first data message after a
  quiet interval is acked at once, so a sparse flow still gets one answer per message.
- The ack goes back on the reverse of the path the data came on, to the underlay hop it came from (as
  an SCMP echo reply does): a path that just delivered a packet, never one known down.

Sans-IO and clock-free: the service passes ``now`` and does the sealing and sending.
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import NamedTuple

ACK_INTERVAL = 0.01  # seconds between acks for one (peer, arrival path); ~100 acks/s per busy path
ACK_PLAINTEXT_LEN = 12
_ACK = struct.Struct("<QI")


class AckError(ValueError):
    """An ack plaintext that is not 12 bytes (after it authenticated: the peer runs other software)."""

    reason = "bad_ack"


def encode_ack(counter: int, received: int) -> bytes:
    return _ACK.pack(counter, received & 0xFFFFFFFF)


def decode_ack(plaintext: bytes) -> tuple[int, int]:
    """(acked counter, running received count) of an ack's plaintext."""
    if len(plaintext) != ACK_PLAINTEXT_LEN:
        raise AckError(f"ack plaintext of {len(plaintext)} bytes, expected {ACK_PLAINTEXT_LEN}")
    counter, received = _ACK.unpack(plaintext)
    return int(counter), int(received)


class AckResponder:
    """The receiving side: counts data per (peer, arrival path) and says when to ack.

    Bounded: at most ``max_paths`` arrival paths are remembered (least recently used goes first; a
    forgotten path's count restarts, which the sender's loss estimate treats as a reset)."""

    def __init__(self, interval: float = ACK_INTERVAL, max_paths: int = 1024) -> None:
        self.interval = interval
        self.max_paths = max_paths
        self._paths: OrderedDict[Hashable, list[float]] = OrderedDict()  # key -> [received, last ack]

    def on_data(self, key: Hashable, counter: int, now: float) -> bytes | None:
        """One authenticated data message arrived on ``key``; returns an ack plaintext when one is due."""
        st = self._paths.get(key)
        if st is None:
            st = self._paths[key] = [0.0, -float("inf")]
            if len(self._paths) > self.max_paths:
                self._paths.popitem(last=False)
        else:
            self._paths.move_to_end(key)
        st[0] += 1
        if now - st[1] < self.interval:
            return None
        st[1] = now
        return encode_ack(counter, int(st[0]))


class Sent(NamedTuple):
    path_id: str
    seq: int  # running count of data messages sent on this path, this one included
    at: float


class SendLog:
    """The sending side: which path carried which counter, for the acks to come back to.

    A ring of the last ``size`` sends per session (keyed by the session's local index and the counter),
    so memory is fixed; an ack for an older message finds nothing and teaches nothing. A batch sent in C
    (``_fast.txworker``) is one range record: (session, first counter, count, path) in a second ring of
    ``size // 8`` ranges, so recording it is one Python step, not one per counter.

    ``pull``, when set, is called on a lookup that finds nothing, to bring in ranges still waiting
    elsewhere (the TX worker's send records), then the lookup is tried once more."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._ring: list[tuple[int, int, Sent] | None] = [None] * size
        self._seq: dict[str, int] = {}
        # (session, first counter, count, path id, path seq of the first, time); newest last.
        self._ranges: deque[tuple[int, int, int, str, int, float]] = deque(maxlen=max(1, size // 8))
        self.pull: Callable[[], None] | None = None

    def record(self, session: int, counter: int, path_id: str, now: float) -> int:
        """Note a data message sent; returns its per-path running count."""
        seq = self._seq.get(path_id, 0) + 1
        self._seq[path_id] = seq
        self._ring[counter % self.size] = (session, counter, Sent(path_id, seq, now))
        return seq

    def record_range(self, session: int, first_counter: int, count: int, path_id: str, now: float) -> int:
        """Note ``count`` data messages with consecutive counters sent on one path; returns the per-path
        running count of the last."""
        if count <= 0:
            return self._seq.get(path_id, 0)
        seq = self._seq.get(path_id, 0)
        self._seq[path_id] = seq + count
        self._ranges.append((session, first_counter, count, path_id, seq + 1, now))
        return seq + count

    def retract_range(self, session: int, first_counter: int, count: int, path_id: str) -> None:
        """The last ``count`` messages of a range recorded before its send (from ``first_counter`` on)
        were not sent after all: the path's running count and the range shrink by them."""
        self._seq[path_id] = max(0, self._seq.get(path_id, 0) - count)
        for i in range(len(self._ranges) - 1, max(-1, len(self._ranges) - 9), -1):
            sess, first, n, pid, seq, at = self._ranges[i]
            if sess == session and pid == path_id and first <= first_counter < first + n:
                self._ranges[i] = (sess, first, first_counter - first, pid, seq, at)
                return

    def lookup(self, session: int, counter: int) -> Sent | None:
        found = self._find(session, counter)
        if found is None and self.pull is not None:
            self.pull()
            found = self._find(session, counter)
        return found

    def _find(self, session: int, counter: int) -> Sent | None:
        entry = self._ring[counter % self.size]
        if entry is not None and entry[0] == session and entry[1] == counter:
            return entry[2]
        # Newest first: an ack is for a recent message, so the search ends after a few ranges.
        for sess, first, count, path_id, seq, at in reversed(self._ranges):
            if sess == session:
                if first <= counter < first + count:
                    return Sent(path_id, seq + counter - first, at)
                if counter >= first + count:
                    break  # a session's ranges are recorded in counter order: it is not further back
        return None

    def sent_on(self, path_id: str) -> int:
        return self._seq.get(path_id, 0)
