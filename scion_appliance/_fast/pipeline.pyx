# distutils: sources = csrc/pipeline.c csrc/scion_parse.c csrc/udpio.c csrc/tunio.c
"""The gateway's data pipeline in batches: TUN slots to sealed SCION/UDP datagrams and back.

Rules kept here:
- Each step is one C call over a whole batch without the GIL (csrc/pipeline.h); sealing and opening are
  ``aead.AeadKey.seal_batch``/``open_batch`` on the same buffers (envelope at a fixed offset, headroom for
  the SCION/UDP header in front of it). Python runs once per batch and step, never per packet.
- Byte-exact with the Python reference: ``TxBatch.frame`` packs as ``sig_frame.FrameEncoder`` (same
  headers and sequence numbers), ``TxBatch.stamp`` writes what ``UdpPacketBuilder.build`` writes.
- The fast path takes only the common case; everything else is listed for the Python path, which keeps
  the reference behaviour and counts drops by reason (``TxBatch.slow_packets``, ``RxBatch.slow_frames``).
- Buffers are allocated once per object; nothing here grows with traffic.
"""

import ipaddress
import os

from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from scion_appliance._fast.codec cimport ScionRecords, scion_parse, scion_rec_t, SCION_OK
from scion_appliance._fast.tunio cimport TunReader, tunio_read, tunio_write_vnet_capped
from scion_appliance._fast.udpio cimport udpio_addr, udpio_send, udpio_send_gso, UDPIO_DEST_ONE


SLOW = PL_SLOW
SIG_HEADER_LEN = PL_SIG_HDR
# Room in front of the envelope for the SCION/UDP header: common (12) + addresses (up to 48) + a path of
# 3 info and 64 hop fields (796) + UDP (8) fit.
cdef enum:
    _HEADROOM = 896
HEADROOM = _HEADROOM


cdef inline int _raise_errno(int rc) except -1:
    raise OSError(-rc, os.strerror(-rc))


cdef class PrefixTable:
    """The remote prefixes of a traffic policy, for lookups in C: ``entries`` are (remote index, network)."""

    def __cinit__(self, entries):
        entries = list(entries)
        self.p = <pl_prefix *>PyMem_Calloc(max(1, len(entries)), sizeof(pl_prefix))
        if self.p == NULL:
            raise MemoryError()
        cdef Py_ssize_t k = 0
        for remote, net in entries:
            net = ipaddress.ip_network(net)
            if not 0 <= remote < PL_SLOW:
                raise ValueError(f"remote index {remote} out of range 0..{PL_SLOW - 1}")
            raw = net.network_address.packed
            self.p[k].v6 = net.version == 6
            self.p[k].plen = net.prefixlen
            self.p[k].remote = remote
            memcpy(self.p[k].net, <const char *>raw, len(raw))
            k += 1
        self.count = k

    def __dealloc__(self):
        PyMem_Free(self.p)


cdef class HeaderTemplate:
    """A SCION/UDP header with an empty payload (``UdpPacketBuilder``'s template) and its parse record."""

    def __cinit__(self, header):
        self.raw = bytes(header)
        self.length = len(self.raw)
        if self.length == 0 or scion_parse(<const uint8_t *><const char *>self.raw, self.length,
                                           &self.rec) != SCION_OK:
            raise ValueError("the header template does not parse as SCION")
        if self.rec.l4_proto != 17 or self.rec.l4_off + 8 != self.length:
            raise ValueError("the header template must be SCION/UDP with an empty payload")
        if self.length > HEADROOM:
            raise ValueError(f"a {self.length}-byte header does not fit the {HEADROOM}-byte headroom")


cdef class TxBatch:
    """Outbound buffers: TUN read slots in, SIG frames out (sealed in place, header stamped in front).

    Out slot k holds, from ``HEADROOM``: envelope header (16) | SIG frame | tag (16); ``seal_batch``
    is called with ``off=HEADROOM`` on ``out``/``out_stride``/``out_lens``/``out_status``."""

    cdef uint8_t *inp
    cdef uint32_t *in_lens
    cdef uint8_t *remote_of
    cdef uint8_t *out_p
    cdef uint32_t *out_offsets
    cdef uint32_t *order
    cdef readonly Py_ssize_t batch, in_stride, out_stride, max_out, n, frames, live
    cdef readonly object out, out_lens, out_status, counters
    cdef readonly uint32_t frame_size
    cdef readonly bint gso_refused

    def __cinit__(self, Py_ssize_t batch=64, Py_ssize_t in_stride=2048, uint32_t frame_size=1472):
        if batch <= 0 or in_stride <= 0:
            raise ValueError("batch and stride must be positive")
        if frame_size < 56:
            raise ValueError("frame size below 56 bytes")
        self.batch, self.in_stride, self.frame_size = batch, in_stride, frame_size
        self.out_stride = HEADROOM + 16 + frame_size + 16
        self.max_out = batch * (in_stride // (frame_size - 16) + 2) + 1
        self.inp = <uint8_t *>PyMem_Calloc(batch, in_stride)
        self.in_lens = <uint32_t *>PyMem_Calloc(batch, 4)
        self.remote_of = <uint8_t *>PyMem_Calloc(batch, 1)
        self.out_offsets = <uint32_t *>PyMem_Calloc(self.max_out, 4)
        self.order = <uint32_t *>PyMem_Calloc(self.max_out, 4)
        if not (self.inp and self.in_lens and self.remote_of and self.out_offsets and self.order):
            raise MemoryError()
        self.out = bytearray(self.max_out * self.out_stride)
        self.out_lens = memoryview(bytearray(4 * self.max_out)).cast("I")
        self.out_status = memoryview(bytearray(self.max_out))
        self.counters = memoryview(bytearray(8 * self.max_out)).cast("Q")
        cdef uint8_t[::1] o = self.out
        self.out_p = &o[0]

    def __dealloc__(self):
        PyMem_Free(self.inp)
        PyMem_Free(self.in_lens)
        PyMem_Free(self.remote_of)
        PyMem_Free(self.out_offsets)
        PyMem_Free(self.order)

    def read_tun(self, int fd, TunReader reader=None):
        """Reads up to a batch from a non-blocking TUN fd; returns the count (0: nothing waiting). A
        virtio-net-header device is read through its ``reader`` (super-packets split into slots)."""
        cdef int rc
        if reader is not None:
            rc = reader.read_into(fd, self.inp, self.in_stride, self.in_lens, self.batch)
            self.n = rc
            return rc
        with nogil:
            rc = tunio_read(fd, self.inp, self.in_stride, self.in_lens, self.batch)
        if rc < 0:
            _raise_errno(rc)
        self.n = rc
        return rc

    def load(self, packets):
        """Puts packets into the read slots as if read from the TUN device (tests, tools)."""
        packets = list(packets)
        if len(packets) > self.batch:
            raise ValueError(f"{len(packets)} packets for a batch of {self.batch}")
        cdef bytes data
        cdef Py_ssize_t i = 0, n
        for pkt in packets:
            data = bytes(pkt)
            n = min(len(data), self.in_stride)
            memcpy(self.inp + i * self.in_stride, <const char *>data, n)
            self.in_lens[i] = len(data) if len(data) <= self.in_stride else self.in_stride + 1
            i += 1
        self.n = len(packets)

    def classify(self, PrefixTable table):
        """Marks each read packet with its remote index, or ``SLOW``; returns how many are not slow."""
        cdef size_t ok
        with nogil:
            ok = pl_classify(self.inp, self.in_stride, self.in_lens, self.n, table.p, table.count,
                             self.remote_of)
        return ok

    def remotes(self):
        """The distinct remote indexes of this batch's fast packets."""
        seen = set()
        for i in range(self.n):
            if self.remote_of[i] != PL_SLOW:
                seen.add(self.remote_of[i])
        return sorted(seen)

    def slow_packets(self):
        """(slot, read length, packet bytes) of every packet the fast path left to Python."""
        out = []
        for i in range(self.n):
            if self.remote_of[i] == PL_SLOW:
                n = self.in_lens[i]
                out.append((i, n, (<char *>self.inp)[i * self.in_stride: i * self.in_stride
                                                       + min(n, self.in_stride)]))
        return out

    def packets_of(self, uint8_t remote):
        """The read packets marked for ``remote``, as bytes (the per-packet fallback)."""
        return [(<char *>self.inp)[i * self.in_stride: i * self.in_stride + self.in_lens[i]]
                for i in range(self.n) if self.remote_of[i] == remote]

    def frame(self, uint8_t remote, uint8_t session, uint32_t stream, uint64_t seq):
        """Packs the packets of ``remote`` into SIG frames in the out slots (plaintext at HEADROOM + 16).
        Returns (frames, packets, next sequence number)."""
        cdef long k
        cdef size_t taken = 0
        cdef uint8_t[::1] st = self.out_status
        cdef uint32_t[::1] ol = self.out_lens
        with nogil:
            k = pl_frame(self.inp, self.in_stride, self.in_lens, self.remote_of, remote, self.n, self.out_p,
                         self.out_stride, _HEADROOM + 16, &ol[0], &st[0], self.max_out, self.frame_size,
                         session, stream, &seq, &taken)
        if k < 0:
            raise ValueError("SIG frames do not fit the out slots")
        # seal_batch wants lengths = plaintext length (it is at off + 16): the frame is the plaintext.
        self.frames = k
        return k, taken, seq

    def stamp(self, HeaderTemplate tmpl):
        """After sealing the frames: the SCION/UDP header in front of each live envelope. Returns how
        many datagrams are ready (the live slots, in order)."""
        cdef uint8_t[::1] st = self.out_status
        cdef uint32_t[::1] ol = self.out_lens
        cdef size_t live
        cdef const uint8_t *t = <const uint8_t *><const char *>tmpl.raw
        with nogil:
            live = pl_stamp(self.out_p, self.out_stride, self.frames, &ol[0], &st[0], _HEADROOM, t,
                            tmpl.length, &tmpl.rec, self.out_offsets, self.order)
        self.live = live
        return live

    def send(self, int fd, const uint8_t[::1] dest not None, Py_ssize_t start=0, bint gso=False):
        """sendmmsg of the ready datagrams from ``start``; returns how many went (0: would block). With
        ``gso``, runs of equal-sized datagrams go as UDP_SEGMENT messages (``gso_refused`` is set when
        the kernel would not cut one; those went plainly)."""
        if dest.shape[0] < sizeof(udpio_addr):
            raise ValueError("dest must be one udpio address record")
        if start < 0 or start > self.live:
            raise ValueError("start out of range")
        cdef int rc = 0
        cdef uint32_t[::1] ol = self.out_lens
        cdef const udpio_addr *d = <const udpio_addr *>&dest[0]
        if start == self.live:
            return 0
        cdef int refused = 0
        with nogil:
            if gso:
                rc = udpio_send_gso(fd, self.out_p, self.out_stride, self.frames, &ol[0], self.out_offsets, d,
                                    self.order, <unsigned>start, <unsigned>(self.live - start), &refused)
            else:
                rc = udpio_send(fd, self.out_p, self.out_stride, self.frames, &ol[0], self.out_offsets, d,
                                UDPIO_DEST_ONE, self.order, <unsigned>start, <unsigned>(self.live - start))
        self.gso_refused = refused != 0
        if rc < 0:
            _raise_errno(rc)
        return rc

    def datagram(self, Py_ssize_t k):
        """The k-th ready datagram's bytes (tests)."""
        if not 0 <= k < self.live:
            raise IndexError(k)
        cdef uint32_t slot = self.order[k]
        cdef uint32_t[::1] ol = self.out_lens
        cdef Py_ssize_t a = slot * self.out_stride + self.out_offsets[slot]
        return bytes(self.out[a: a + ol[slot]])

    def frame_bytes(self, Py_ssize_t k):
        """Frame k's plaintext before sealing (tests)."""
        if not 0 <= k < self.frames:
            raise IndexError(k)
        cdef uint32_t[::1] ol = self.out_lens
        cdef Py_ssize_t a = k * self.out_stride + HEADROOM + 16
        return bytes(self.out[a: a + ol[k]])


cdef class Deframer:
    """One peer's deframing state for the C path: the packet being reassembled across frames (and
    batches), and an arena for the packets completed in one batch. ``reset()`` hands the stream to the
    Python decoder (done automatically at the first frame the C path does not take)."""

    def __cinit__(self, Py_ssize_t batch=64, Py_ssize_t stride=2048):
        self.arena_size = batch * stride + 65600
        self.carry = <pl_carry *>PyMem_Calloc(1, sizeof(pl_carry))
        self.arena = <uint8_t *>PyMem_Calloc(self.arena_size, 1)
        if self.carry == NULL or self.arena == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.carry)
        PyMem_Free(self.arena)

    @property
    def pending(self):
        """True while a packet is partly reassembled here."""
        return self.carry.active != 0

    def reset(self):
        self.carry.active = 0


cdef class RxBatch:
    """Inbound per-slot state over a receive batch (``buf``/``stride`` of the caller's recvmmsg slots):
    which slots are data envelopes, their offsets and receivers, open status, and the deframed packets."""

    cdef uint32_t *receivers
    cdef uint8_t *is_data
    cdef uint8_t *slow
    cdef const uint8_t **pkt_ptrs
    cdef uint32_t *pkt_lens
    cdef uint32_t *gro_work
    cdef readonly Py_ssize_t batch, n, npkts, max_pkts, tun_writes
    cdef readonly object offsets, status, counters
    cdef object _state  # the deframer whose arena the listed packets may point into

    def __cinit__(self, Py_ssize_t batch=64, Py_ssize_t stride=2048):
        if batch <= 0:
            raise ValueError("batch must be positive")
        self.batch = batch
        self.max_pkts = batch * (stride // 20 + 1) + 1
        self.receivers = <uint32_t *>PyMem_Calloc(batch, 4)
        self.is_data = <uint8_t *>PyMem_Calloc(batch, 1)
        self.slow = <uint8_t *>PyMem_Calloc(batch, 1)
        self.pkt_ptrs = <const uint8_t **>PyMem_Calloc(self.max_pkts, sizeof(uint8_t *))
        self.pkt_lens = <uint32_t *>PyMem_Calloc(self.max_pkts, 4)
        self.gro_work = <uint32_t *>PyMem_Calloc(3 * self.max_pkts, 4)
        if not (self.receivers and self.is_data and self.slow and self.pkt_ptrs and self.pkt_lens
                and self.gro_work):
            raise MemoryError()
        self.offsets = memoryview(bytearray(4 * batch)).cast("I")
        self.status = bytearray(batch)
        self.counters = memoryview(bytearray(8 * batch)).cast("Q")

    def __dealloc__(self):
        PyMem_Free(self.receivers)
        PyMem_Free(self.is_data)
        PyMem_Free(self.slow)
        PyMem_Free(self.pkt_ptrs)
        PyMem_Free(self.pkt_lens)
        PyMem_Free(self.gro_work)

    def select(self, const uint8_t[::1] buf not None, Py_ssize_t stride, const uint32_t[::1] lengths not None,
               ScionRecords recs not None, Py_ssize_t n, uint16_t port, uint8_t msg_type):
        """Marks the slots holding data envelopes of ``msg_type`` to ``port``; returns their receiver
        indexes (distinct, in order of first appearance)."""
        if n < 0 or n > self.batch or n > recs.count or n > lengths.shape[0] or n * stride > buf.shape[0]:
            raise ValueError("batch size out of range")
        cdef uint32_t[::1] offs = self.offsets
        with nogil:
            pl_rx_select(&buf[0], stride, &lengths[0], recs.recs, n, port, msg_type, &offs[0],
                         self.receivers, self.is_data)
        self.n = n
        seen = []
        for i in range(n):
            if self.is_data[i] and self.receivers[i] not in seen:
                seen.append(self.receivers[i])
        return seen

    def data_slot(self, Py_ssize_t i):
        """True when slot i holds a data envelope (after ``select``)."""
        return self.is_data[i] != 0 if 0 <= i < self.n else False

    def mark(self, uint32_t receiver):
        """status = 0 for the data slots of ``receiver``, SLOW elsewhere (what ``open_batch`` skips).
        Returns the slot indexes marked live."""
        live = []
        cdef uint8_t[::1] st = self.status
        cdef Py_ssize_t i
        for i in range(self.batch):
            if i < self.n and self.is_data[i] and self.receivers[i] == receiver:
                st[i] = 0
                live.append(i)
            else:
                st[i] = PL_SLOW
        return live

    def same_route(self, const uint8_t[::1] buf not None, Py_ssize_t stride, ScionRecords recs not None,
                   const uint8_t[::1] addrs not None, Py_ssize_t i, Py_ssize_t j):
        """True when slots i and j came the same way (path bytes and underlay source)."""
        if not (0 <= i < self.n and 0 <= j < self.n):
            raise IndexError((i, j))
        cdef size_t asz = sizeof(udpio_addr)
        if <size_t>addrs.shape[0] < self.n * asz:
            raise ValueError("addrs too short")
        return pl_same_route(&buf[0], stride, recs.recs, &addrs[0], asz, i, j) != 0

    def deframe(self, const uint8_t[::1] buf not None, Py_ssize_t stride, const uint32_t[::1] lengths not None,
                PrefixTable table not None, uint8_t remote, Deframer state not None, bint all_slow=False):
        """Deframes the opened frames (status 0; plaintext lengths in ``lengths``) in stream order; returns
        (packets, spoofed, frames done here). ``slow_frames`` lists the frames left to the Python decoder
        (all of them with ``all_slow``: the decoder holds a partial packet). The packets point into ``buf``
        and the deframer's arena: write them (``write_tun``) before either is reused."""
        if self.n * stride > buf.shape[0] or lengths.shape[0] < self.n:
            raise ValueError("buffer too small for the batch")
        cdef uint32_t[::1] offs = self.offsets
        cdef uint8_t[::1] st = self.status
        cdef size_t spoofed = 0, fast = 0, np = 0
        cdef Py_ssize_t i
        self._state = state
        if all_slow:
            state.carry.active = 0
            for i in range(self.n):
                self.slow[i] = st[i] == 0 and lengths[i] > 0
            self.npkts = 0
            return 0, 0, 0
        with nogil:
            np = pl_deframe(&buf[0], stride, &offs[0], &lengths[0], &st[0], self.n, table.p, table.count,
                            remote, state.carry, state.arena, state.arena_size, self.pkt_ptrs, self.pkt_lens,
                            self.max_pkts, self.slow, &spoofed, &fast)
        self.npkts = np
        return np, spoofed, fast

    def set_count(self, Py_ssize_t n):
        """Declares slots 0..n-1 as the batch (frames placed by hand: tests, tools)."""
        if not 0 <= n <= self.batch:
            raise ValueError("count out of range")
        self.n = n

    def slow_frames(self):
        """Slot indexes of the opened frames left to the Python decoder, in order."""
        return [i for i in range(self.n) if self.slow[i]]

    def packets(self):
        """The deframed packets as bytes (tests)."""
        return [(<const char *>self.pkt_ptrs[k])[:self.pkt_lens[k]] for k in range(self.npkts)]

    def write_tun(self, int fd, bint vnet=False, unsigned int udp_segs=64):
        """Writes the deframed packets to the TUN fd; returns (written, failed, first errno). On a
        virtio-net-header device (``vnet``) runs of one flow go as one coalesced GSO write of at most
        ``udp_segs`` UDP datagrams (TCP up to 64 segments; ``tun_writes`` says how many writes the batch
        took)."""
        cdef size_t done, failed = 0, writes = 0
        cdef int err = 0
        if self.npkts == 0:
            self.tun_writes = 0
            return 0, 0, 0
        with nogil:
            if vnet:
                done = tunio_write_vnet_capped(fd, self.pkt_ptrs, self.pkt_lens, self.npkts, self.gro_work,
                                               &failed, &err, &writes, udp_segs)
            else:
                done = pl_tun_write(fd, self.pkt_ptrs, self.pkt_lens, self.npkts, &failed, &err)
                writes = done + failed
        self.tun_writes = writes
        return done, failed, err
