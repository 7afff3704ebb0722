# distutils: sources = csrc/udpio.c
"""Batched UDP socket I/O: recvmmsg/sendmmsg over slot batches, the underlay of router and gateway.

Rules kept here:
- A batch is N slots in one writable buffer (slot i at i*stride) with a uint32 length per slot
  (``array('I')``); addresses are fixed 24-byte records (``ADDR_SIZE``) in a bytearray, laid out as
  ``udpio_addr`` in csrc/udpio.h: family (u16), port (u16, host order), scope id (u32), address (16 B).
- Syscalls run without the GIL and never block (MSG_DONTWAIT); waiting is the caller's job
  (``trio.lowlevel.wait_readable``/``wait_writable``).
- A return of 0 means "would block". An error before the first packet raises ``OSError`` with its errno;
  an error after some packets returns the count so far, so the next call reports exactly the failing
  packet (the caller counts a drop and resumes one further).
- A received length greater than the stride means the datagram was truncated to the slot; the length is
  the datagram's real size. Consumers must check it before trusting the slot.
- Source addresses of IPv4 peers on dual-stack sockets are stored as AF_INET (not ::ffff:a.b.c.d).
- Offloads where the kernel has them (csrc/udpio.h): ``send_batch_gso`` sends runs of equal-sized
  datagrams to one destination as one UDP_SEGMENT message each; ``GroReader`` receives from a socket with
  UDP_GRO on (``enable_gro``) and cuts coalesced messages back into datagrams, one per slot. Slots,
  lengths and addresses look exactly as ``recv_batch``/``send_batch`` have them.
"""

import os
import socket
import struct

from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport uint32_t
from libc.string cimport memcpy

# udpio_addr, udpio_recv, udpio_send and the UDPIO_* constants come from udpio.pxd beside this file.

ADDR_SIZE = sizeof(udpio_addr)
# Messages per batch call are bounded only by the buffers; the C side splits them into syscalls of 256.

_REC = struct.Struct("=HHI16s")
assert _REC.size == ADDR_SIZE


cdef inline int _raise_errno(int rc) except -1:
    raise OSError(-rc, os.strerror(-rc))


def new_addrs(Py_ssize_t n):
    """A zeroed record array for ``n`` addresses."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return bytearray(n * ADDR_SIZE)


def addr_pack(str host, int port, int scope_id=0):
    """One address record for a numeric IPv4/IPv6 ``host`` (``fe80::1%eth0`` names the scope)."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range 0..65535")
    if "%" in host:
        host, _, scope = host.partition("%")
        scope_id = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
    try:
        raw = socket.inet_pton(socket.AF_INET, host)
        return _REC.pack(socket.AF_INET, port, 0, raw)
    except OSError:
        pass
    try:
        raw = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        raise ValueError(f"not a numeric IPv4 or IPv6 address: {host!r}") from None
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return _REC.pack(socket.AF_INET, port, 0, raw[12:])
    return _REC.pack(socket.AF_INET6, port, scope_id, raw)


def addr_set(unsigned char[::1] addrs, Py_ssize_t i, str host, int port):
    """Writes record ``i`` of ``addrs`` from a numeric host and a port."""
    if i < 0 or (i + 1) * ADDR_SIZE > addrs.shape[0]:
        raise IndexError(f"record {i} outside an array of {addrs.shape[0] // ADDR_SIZE}")
    cdef const unsigned char[::1] rec = addr_pack(host, port)
    memcpy(&addrs[i * ADDR_SIZE], &rec[0], ADDR_SIZE)


def addr_get(const unsigned char[::1] addrs, Py_ssize_t i):
    """Record ``i`` as a Python ``(host, port)`` tuple, as ``socket.recvfrom`` would give it for IPv4
    (for IPv6 too, with ``%scope`` appended to link-local hosts)."""
    if i < 0 or (i + 1) * ADDR_SIZE > addrs.shape[0]:
        raise IndexError(f"record {i} outside an array of {addrs.shape[0] // ADDR_SIZE}")
    family, port, scope_id, raw = _REC.unpack_from(addrs, i * ADDR_SIZE)
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4]), port
    if family == socket.AF_INET6:
        host = socket.inet_ntop(socket.AF_INET6, raw)
        if scope_id:
            host = f"{host}%{scope_id}"
        return host, port
    raise ValueError(f"address record {i} is empty (family {family})")


def addr_bytes(const unsigned char[::1] addrs, Py_ssize_t i):
    """Record ``i`` as 24 bytes: a hashable key for a peer, equal for equal endpoints."""
    if i < 0 or (i + 1) * ADDR_SIZE > addrs.shape[0]:
        raise IndexError(f"record {i} outside an array of {addrs.shape[0] // ADDR_SIZE}")
    return bytes(addrs[i * ADDR_SIZE:(i + 1) * ADDR_SIZE])


cdef Py_ssize_t _slots(Py_ssize_t buflen, Py_ssize_t stride) except -1:
    if stride <= 0:
        raise ValueError(f"stride must be > 0, got {stride}")
    return buflen // stride


cdef Py_ssize_t _recv_count(Py_ssize_t buflen, Py_ssize_t stride, Py_ssize_t nlengths, unsigned char[::1] addrs,
                            Py_ssize_t max_count, udpio_addr **ap) except -1:
    """How many datagrams one receive into a batch may take (0 to 2^30): its slots, lengths, source
    records and ``max_count`` (if >= 0). ``*ap``: where the source records go (NULL without ``addrs``)."""
    cdef Py_ssize_t n = min(_slots(buflen, stride), nlengths)
    ap[0] = NULL
    if addrs is not None:
        n = min(n, addrs.shape[0] // ADDR_SIZE)
        if addrs.shape[0] >= ADDR_SIZE:
            ap[0] = <udpio_addr *>&addrs[0]
    if max_count >= 0:
        n = min(n, max_count)
    return max(0, min(n, 1 << 30))


def recv_batch(int fd, unsigned char[::1] buf, Py_ssize_t stride, unsigned int[::1] lengths,
               unsigned char[::1] addrs=None, Py_ssize_t max_count=-1):
    """Receives up to as many datagrams as the batch has slots (and ``max_count``, if >= 0).

    Fills slot i, ``lengths[i]`` and, when ``addrs`` is given, source record i. Returns the count
    (0: nothing waiting). ``lengths[i] > stride`` flags a truncated datagram.
    """
    cdef udpio_addr *ap
    cdef Py_ssize_t n = _recv_count(buf.shape[0], stride, lengths.shape[0], addrs, max_count, &ap)
    if n == 0:
        return 0
    cdef int rc
    with nogil:
        rc = udpio_recv(fd, &buf[0], <size_t>stride, <uint32_t *>&lengths[0], ap, <unsigned>n)
    if rc < 0:
        _raise_errno(rc)
    return rc


cdef int _send(int fd, const unsigned char[::1] buf, Py_ssize_t stride, const unsigned int[::1] lengths,
               const unsigned int[::1] offsets, const unsigned char[::1] dests,
               const unsigned int[::1] order, Py_ssize_t count, Py_ssize_t start) except -1:
    cdef Py_ssize_t nslots = min(_slots(buf.shape[0], stride), lengths.shape[0])
    cdef const uint32_t *op = NULL
    cdef const uint32_t *ordp = NULL
    cdef const udpio_addr *dp = NULL
    cdef int mode = UDPIO_DEST_NONE
    if offsets is not None:
        nslots = min(nslots, offsets.shape[0])
        if offsets.shape[0] > 0:
            op = <const uint32_t *>&offsets[0]
    if dests is not None:
        if dests.shape[0] == ADDR_SIZE:
            mode = UDPIO_DEST_ONE
        else:
            if dests.shape[0] % ADDR_SIZE:
                raise ValueError(f"dests is {dests.shape[0]} bytes, not a whole number of {ADDR_SIZE}-byte records")
            mode = UDPIO_DEST_SLOT
            nslots = min(nslots, dests.shape[0] // ADDR_SIZE)
        if dests.shape[0] > 0:
            dp = <const udpio_addr *>&dests[0]
    ordp = checked_order(order, start, count, nslots)
    if count == 0:
        return 0
    count = min(count, 1 << 30)
    cdef int rc
    with nogil:
        rc = udpio_send(fd, &buf[0], <size_t>stride, <size_t>nslots, <const uint32_t *>&lengths[0], op, dp,
                        mode, ordp, <unsigned>start, <unsigned>count)
    if rc < 0:
        _raise_errno(rc)
    return rc


def send_batch(int fd, const unsigned char[::1] buf, Py_ssize_t stride, const unsigned int[::1] lengths,
               const unsigned int[::1] offsets, const unsigned char[::1] dests, Py_ssize_t count,
               Py_ssize_t start=0):
    """Sends slots ``start .. start+count-1``; returns how many went out (0: would block).

    Packet i is ``lengths[i]`` bytes at ``i*stride + offsets[i]`` (``offsets`` None: at the slot start).
    ``dests``: None for a connected socket, one record (``ADDR_SIZE`` bytes) for all packets, or a
    record per slot. A packet outside its slot raises EINVAL, an empty record EAFNOSUPPORT, when first.
    """
    return _send(fd, buf, stride, lengths, offsets, dests, None, count, start)


def send_batch_indexed(int fd, const unsigned char[::1] buf, Py_ssize_t stride,
                       const unsigned int[::1] lengths, const unsigned int[::1] offsets,
                       const unsigned char[::1] dests, const unsigned int[::1] order, Py_ssize_t count,
                       Py_ssize_t start=0):
    """Sends the slots ``order[start .. start+count-1]`` in that order, each to its own destination
    record (``dests`` indexed by slot, or one record for all): a batch sorted by destination or egress
    goes out without moving a byte. Returns and raises as ``send_batch``."""
    if order is None:
        raise TypeError("order must be a uint32 array of slot indices")
    return _send(fd, buf, stride, lengths, offsets, dests, order, count, start)


SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGS = UDPIO_GSO_MAX_SEGS


def enable_gro(sock):
    """Turns UDP_GRO on for ``sock``; False when the kernel does not offer it."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


cdef class GroReader:
    """Receives slot batches from a UDP_GRO socket; datagrams of a coalesced message that do not fit a
    batch wait here for the next call (``pending``)."""

    def __cinit__(self):
        self.r = <udpio_gro_reader *>PyMem_Calloc(1, sizeof(udpio_gro_reader))
        if self.r == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.r)

    @property
    def pending(self):
        return self.r.cur < self.r.nmsg

    def recv_batch(self, int fd, unsigned char[::1] buf, Py_ssize_t stride, unsigned int[::1] lengths,
                   unsigned char[::1] addrs=None, Py_ssize_t max_count=-1):
        """As ``recv_batch``."""
        cdef udpio_addr *ap
        cdef Py_ssize_t n = _recv_count(buf.shape[0], stride, lengths.shape[0], addrs, max_count, &ap)
        if n == 0:
            return 0
        cdef int rc
        with nogil:
            rc = udpio_gro_recv(fd, self.r, &buf[0], <size_t>stride, <uint32_t *>&lengths[0], ap, <unsigned>n)
        if rc < 0:
            _raise_errno(rc)
        return rc


def send_batch_gso(int fd, const unsigned char[::1] buf, Py_ssize_t stride, const unsigned int[::1] lengths,
                   const unsigned int[::1] offsets, const unsigned char[::1] dest, Py_ssize_t count,
                   Py_ssize_t start=0):
    """``send_batch`` to one destination (``dest``: one record, or None on a connected socket) with runs
    of equal-sized datagrams as UDP_SEGMENT messages. Returns (sent, gso_refused): ``gso_refused`` when the
    kernel would not cut a run (those went plainly)."""
    cdef Py_ssize_t nslots = min(_slots(buf.shape[0], stride), lengths.shape[0])
    cdef const uint32_t *op = NULL
    cdef const udpio_addr *dp = NULL
    if offsets is not None:
        nslots = min(nslots, offsets.shape[0])
        op = <const uint32_t *>&offsets[0] if offsets.shape[0] > 0 else NULL
    if dest is not None:
        if dest.shape[0] != ADDR_SIZE:
            raise ValueError(f"dest must be one {ADDR_SIZE}-byte record")
        dp = <const udpio_addr *>&dest[0]
    checked_order(None, start, count, nslots)
    if count == 0:
        return 0, False
    cdef int rc, refused = 0
    with nogil:
        rc = udpio_send_gso(fd, &buf[0], <size_t>stride, <size_t>nslots, <const uint32_t *>&lengths[0], op, dp,
                            NULL, <unsigned>start, <unsigned>count, &refused)
    if rc < 0:
        _raise_errno(rc)
    return rc, refused != 0
