"""SCION IP Gateway (SIG) frames: IP packets packed into frames and reassembled on the way back.

Wire format, byte-exact with scionproto/scion's gateway (``gateway/dataplane/encoder.go``)::

    0       1       2       3       4 ..... 7                 8 ............ 15
    version session index (u16 BE)  reserved(12 bits)|stream(20 bits)  sequence number (u64 BE)

followed by raw IPv4/IPv6 packets, one directly after another, no padding. A packet that does not fit
continues at the start of the next frame of the same stream. ``index`` is the byte offset (after the
16-byte header) of the first packet that *starts* in the frame; 0xffff means no packet starts in it.
Each stream numbers its frames 0, 1, 2, ... (one sequence per encoder).

Rules this module keeps:
- Encoder: the reference's packing exactly. A new packet is started only while at least 40 bytes (an
  IPv6 header) are free in the frame, so every packet start carries its whole IP header. Packets that
  are not well-formed IPv4/IPv6 with a matching length field are refused (counted), as the reference
  does. A batch is flushed completely: the last frame of ``encode()`` is sent even if not full.
- Decoder: sans-IO and total. Any byte string is accepted by ``feed``; what cannot be delivered is
  dropped and counted under a ``FrameDrop`` reason, never raised. Complete packets are delivered at
  once (no waiting for earlier frames). A packet split across frames is reassembled only from
  frames with consecutive sequence numbers; a gap, a framing inconsistency or a stream restart
  discards only the packet(s) concerned and the decoder resynchronises on the next packet start
  (the ``index`` field). Late frames (sequence below the one awaited) still deliver the complete
  packets they hold. Duplicates are not filtered here: replay protection belongs to the sealed
  envelope below this layer (in plain mode the reference gateway does not filter them either).
- Memory is bounded: one partial packet per (session, stream), at most ``max_streams`` streams
  (least recently used evicted).
"""

from __future__ import annotations

import enum
import struct
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

HEADER_LEN = 16
VERSION = 0
NO_PACKET_START = 0xFFFF
STREAM_MASK = 0xFFFFF
SEQ_MASK = 0xFFFF_FFFF_FFFF_FFFF
# The reference starts a packet only if an IPv6 header still fits: hdr + 40 is the smallest usable frame.
MIN_PACKET_START_ROOM = 40
MIN_FRAME_SIZE = HEADER_LEN + MIN_PACKET_START_ROOM
MAX_FRAME_SIZE = 0xFFFF  # the reference's frame buffer size and its mtu argument type (uint16)

_HDR = struct.Struct("!BBHIQ")


class FrameDrop(enum.StrEnum):
    """Why a frame, a packet or a fragment was not delivered (counter key and log word)."""

    FRAME_TOO_SHORT = "frame_too_short"  # fewer than 16 bytes: no SIG header
    BAD_VERSION = "bad_version"  # SIG version other than 0
    BAD_INDEX = "bad_index"  # index points past the end of the frame
    LOST_FRAGMENT = "lost_fragment"  # a packet's pieces could not all be collected (frame lost/reordered)
    BAD_FRAGMENT = "bad_fragment"  # continuation bytes do not match the packet being reassembled
    BAD_IP_VERSION = "bad_ip_version"  # a packet start that is neither IPv4 nor IPv6
    BAD_IP_LENGTH = "bad_ip_length"  # IP length field impossible (IPv4 total length < 20)
    TRUNCATED_IP_HEADER = "truncated_ip_header"  # a packet start whose IP header is cut by the frame end
    STREAM_EVICTED = "stream_evicted"  # a partial packet dropped because too many streams were active
    # encoder side
    EMPTY_PACKET = "empty_packet"
    PACKET_LENGTH_MISMATCH = "packet_length_mismatch"  # IP length field disagrees with the buffer


@dataclass(frozen=True, slots=True)
class FrameHeader:
    version: int
    session_id: int
    index: int
    stream_id: int
    seq: int
    reserved: int = 0

    def pack(self) -> bytes:
        word = ((self.reserved & 0xFFF) << 20) | (self.stream_id & STREAM_MASK)
        return _HDR.pack(self.version, self.session_id, self.index, word, self.seq & SEQ_MASK)

    @classmethod
    def unpack(cls, frame: bytes | bytearray | memoryview) -> FrameHeader:
        """Parse the first 16 bytes; raises ValueError if there are fewer."""
        if len(frame) < HEADER_LEN:
            raise ValueError(f"SIG frame of {len(frame)} bytes is shorter than its 16-byte header")
        version, session, index, word, seq = _HDR.unpack_from(frame, 0)
        return cls(version, session, index, word & STREAM_MASK, seq, word >> 20)


def ip_packet_length(buf: bytes | bytearray | memoryview, offset: int = 0) -> int | FrameDrop:
    """Total length an IP packet starting at ``offset`` declares, or the reason it cannot be read."""
    avail = len(buf) - offset
    if avail <= 0:
        return FrameDrop.EMPTY_PACKET
    version = buf[offset] >> 4
    if version == 4:
        if avail < 20:
            return FrameDrop.TRUNCATED_IP_HEADER
        length = (buf[offset + 2] << 8) | buf[offset + 3]
        if length < 20:
            return FrameDrop.BAD_IP_LENGTH
        return length
    if version == 6:
        if avail < 40:
            return FrameDrop.TRUNCATED_IP_HEADER
        return 40 + ((buf[offset + 4] << 8) | buf[offset + 5])
    return FrameDrop.BAD_IP_VERSION


class FrameEncoder:
    """Packs IP packets of one stream into SIG frames of at most ``frame_size`` bytes (header included).

    ``frame_size`` is the reference encoder's ``mtu`` argument: the room left for the SIG frame after
    the SCION/UDP headers (and, in sealed mode, the envelope) are taken off the path MTU.
    """

    def __init__(self, session_id: int, stream_id: int, frame_size: int, first_seq: int = 0) -> None:
        if not 0 <= session_id <= 0xFF:
            raise ValueError(f"SIG session id {session_id} out of range 0..255")
        if not 0 <= stream_id <= STREAM_MASK:
            raise ValueError(f"SIG stream id {stream_id} out of range 0..{STREAM_MASK}")
        if not MIN_FRAME_SIZE <= frame_size <= MAX_FRAME_SIZE:
            raise ValueError(
                f"SIG frame size {frame_size} out of range {MIN_FRAME_SIZE}..{MAX_FRAME_SIZE} "
                "(16-byte header plus room for a 40-byte IPv6 header)"
            )
        self.session_id = session_id
        self.stream_id = stream_id
        self.frame_size = frame_size
        self.seq = first_seq & SEQ_MASK  # next sequence number to use
        self.drops: Counter[FrameDrop] = Counter()
        self.frames_out = 0
        self.packets_in = 0

    def encode(self, packets: Iterable[bytes | bytearray | memoryview]) -> list[bytes]:
        """Frames for a batch of IP packets; invalid packets are skipped and counted in ``drops``."""
        valid: list[bytes | bytearray | memoryview] = []
        for pkt in packets:
            n = len(pkt)
            # Fast path for the common case; the slow path finds the reason for the counter.
            if n >= 20 and (
                (pkt[0] >> 4 == 4 and ((pkt[2] << 8) | pkt[3]) == n)
                or (n >= 40 and pkt[0] >> 4 == 6 and 40 + ((pkt[4] << 8) | pkt[5]) == n)
            ):
                valid.append(pkt)
                continue
            length = ip_packet_length(pkt)
            self.drops[length if isinstance(length, FrameDrop) else FrameDrop.PACKET_LENGTH_MISMATCH] += 1
        if not valid:
            return []
        self.packets_in += len(valid)
        # Lay the packets back to back and cut the stream into frame payloads by the reference's rule.
        data = b"".join(valid)
        room = self.frame_size - HEADER_LEN
        pack = _HDR.pack
        session, stream = self.session_id, self.stream_id
        seq = self.seq
        frames: list[bytes] = []
        fstart = 0  # stream offset where the current frame's payload begins
        off = 0  # stream offset of the packet being placed
        index = NO_PACKET_START
        for pkt in valid:
            if room - (off - fstart) < MIN_PACKET_START_ROOM:
                frames.append(pack(VERSION, session, index, stream, seq) + data[fstart:off])
                seq = (seq + 1) & SEQ_MASK
                fstart = off
                index = NO_PACKET_START
            if index == NO_PACKET_START:
                index = off - fstart
            off += len(pkt)
            while off - fstart > room:
                # The packet continues in fresh frames, each one starting with the rest of it.
                frames.append(pack(VERSION, session, index, stream, seq) + data[fstart : fstart + room])
                seq = (seq + 1) & SEQ_MASK
                fstart += room
                index = NO_PACKET_START
        frames.append(pack(VERSION, session, index, stream, seq) + data[fstart:off])
        self.seq = (seq + 1) & SEQ_MASK
        self.frames_out += len(frames)
        return frames


@dataclass(slots=True)
class _Partial:
    """A packet whose first bytes arrived; the rest must come in frame ``next_seq``."""

    data: bytearray
    length: int
    next_seq: int


class FrameDecoder:
    """Deframes the SIG frames of one peer back into IP packets (see the module rules).

    ``feed(frame)`` returns the packets completed by that frame, in stream order. ``drops`` counts
    every loss by reason; ``frames_in``/``packets_out`` count traffic. Reassembly state is kept per
    (session id, stream id), as the reference keeps one reassembly list per session worker and stream.
    A frame more than ``reorder_window`` sequence numbers behind the awaited one is taken as the peer's
    encoder having restarted (the reference accepts any sequence number on an idle stream) rather
    than as a late frame.
    """

    def __init__(self, max_streams: int = 256, reorder_window: int = 64) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        if reorder_window < 0:
            raise ValueError("reorder_window must not be negative")
        self.max_streams = max_streams
        self.reorder_window = reorder_window
        self._partials: OrderedDict[tuple[int, int], _Partial | None] = OrderedDict()
        self.drops: Counter[FrameDrop] = Counter()
        self.frames_in = 0
        self.packets_out = 0

    def pending(self) -> int:
        """Number of streams holding a partly received packet."""
        return sum(1 for p in self._partials.values() if p is not None)

    def feed_many(self, frames: Iterable[bytes | bytearray | memoryview]) -> list[bytes]:
        out: list[bytes] = []
        for frame in frames:
            out.extend(self.feed(frame))
        return out

    def feed(self, frame: bytes | bytearray | memoryview) -> list[bytes]:
        self.frames_in += 1
        n = len(frame)
        if n < HEADER_LEN:
            self.drops[FrameDrop.FRAME_TOO_SHORT] += 1
            return []
        version, session, index, word, seq = _HDR.unpack_from(frame, 0)
        if version != VERSION:
            self.drops[FrameDrop.BAD_VERSION] += 1
            return []
        payload_len = n - HEADER_LEN
        if index != NO_PACKET_START and index >= payload_len:
            self.drops[FrameDrop.BAD_INDEX] += 1
            return []
        key = (session, word & STREAM_MASK)
        partial = self._take_partial(key)
        out: list[bytes] = []
        start = HEADER_LEN  # where the first packet start is, if any
        if partial is not None:
            if seq == partial.next_seq:
                need = partial.length - len(partial.data)
                if index == NO_PACKET_START:
                    if payload_len < need:
                        partial.data += frame[HEADER_LEN:]
                        partial.next_seq = (seq + 1) & SEQ_MASK
                        self._partials[key] = partial
                        return out
                    if payload_len > need:
                        # Bytes after the packet's end yet no packet start: the stream is inconsistent.
                        self.drops[FrameDrop.BAD_FRAGMENT] += 1
                        return out
                    partial.data += frame[HEADER_LEN:]
                    self._deliver(out, bytes(partial.data))
                    return out
                if index == need:
                    partial.data += frame[HEADER_LEN : HEADER_LEN + need]
                    self._deliver(out, bytes(partial.data))
                else:
                    self.drops[FrameDrop.BAD_FRAGMENT] += 1
            elif (partial.next_seq - seq) & SEQ_MASK > self.reorder_window:
                # Frames between the two went missing (or the peer's encoder restarted): the packet
                # being collected can never be completed.
                self.drops[FrameDrop.LOST_FRAGMENT] += 1
            else:
                # A late frame from before the one awaited: keep waiting for the continuation and
                # deliver only the packets this frame holds whole.
                self._partials[key] = partial
                if index != NO_PACKET_START:
                    self._scan(frame, HEADER_LEN + index, seq, key, out, keep_tail=False)
                return out
        if index == NO_PACKET_START:
            if partial is None:
                self.drops[FrameDrop.LOST_FRAGMENT] += 1  # a middle piece of a packet we never saw start
            return out
        if partial is None and index > 0:
            self.drops[FrameDrop.LOST_FRAGMENT] += 1  # the tail of a packet we never saw start
        start = HEADER_LEN + index
        self._scan(frame, start, seq, key, out, keep_tail=True)
        return out

    def _take_partial(self, key: tuple[int, int]) -> _Partial | None:
        partial = self._partials.pop(key) if key in self._partials else None
        self._partials[key] = None  # most recently used
        if len(self._partials) > self.max_streams:
            _, evicted = self._partials.popitem(last=False)
            if evicted is not None:
                self.drops[FrameDrop.STREAM_EVICTED] += 1
        return partial

    def _deliver(self, out: list[bytes], pkt: bytes) -> None:
        out.append(pkt)
        self.packets_out += 1

    def _scan(
        self,
        frame: bytes | bytearray | memoryview,
        offset: int,
        seq: int,
        key: tuple[int, int],
        out: list[bytes],
        keep_tail: bool,
    ) -> None:
        end = len(frame)
        if not isinstance(frame, bytes):
            frame = bytes(frame)  # one copy, then slices are the delivered packets themselves
        delivered = len(out)
        while offset < end:
            # Without a readable header the rest of the frame cannot be split into packets.
            v = frame[offset] >> 4
            if v == 4 and end - offset >= 20:
                length = (frame[offset + 2] << 8) | frame[offset + 3]
                if length < 20:
                    self.drops[FrameDrop.BAD_IP_LENGTH] += 1
                    break
            elif v == 6 and end - offset >= 40:
                length = 40 + ((frame[offset + 4] << 8) | frame[offset + 5])
            else:
                reason = ip_packet_length(frame, offset)
                self.drops[reason if isinstance(reason, FrameDrop) else FrameDrop.BAD_IP_VERSION] += 1
                break
            if end - offset >= length:
                out.append(frame[offset : offset + length])
                offset += length
                continue
            if keep_tail:
                self._partials[key] = _Partial(bytearray(frame[offset:]), length, (seq + 1) & SEQ_MASK)
            else:
                self.drops[FrameDrop.LOST_FRAGMENT] += 1
            break
        self.packets_out += len(out) - delivered


def encode_batch(session_id: int, stream_id: int, frame_size: int, packets: Sequence[bytes]) -> list[bytes]:
    """One-shot encoding of ``packets`` starting at sequence number 0 (known-answer tests, tools)."""
    return FrameEncoder(session_id, stream_id, frame_size).encode(packets)
