# distutils: sources = csrc/tunio.c
"""Batched TUN device I/O: many IP packets per call between a TUN fd and a slot batch.

Rules kept here:
- Same batch layout as udpio: slot i at i*stride of one writable buffer, uint32 lengths
  (``array('I')``). The device is opened and configured by ``scion_appliance.tun``; this module only
  moves packets, without the GIL, one read()/write() per packet (the kernel's TUN interface).
- The fd must be non-blocking: a read batch ends at the first EAGAIN. A return of 0 means "would block".
- An error before the first packet raises ``OSError`` with its errno; an error after some packets
  returns the count so far (the next call reports exactly the failing packet).
- ``lengths[i] == stride + 1`` flags a packet longer than the slot (truncated to the slot; the kernel
  drops the rest). Choose a stride above the device MTU and this never happens.
- A device opened with the virtio-net header (``tun.TunDevice.open(offload=True)``) is read through a
  ``TunReader`` (super-packets split into valid MTU-sized packets, csrc/tunio.h) and written with
  ``write_vnet`` (runs of one flow coalesced into one GSO write) or ``write_batch(..., vnet=True)``.
"""

import os

from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport uint32_t

from scion_appliance._fast.udpio cimport checked_order

# tunio_read and tunio_write come from tunio.pxd beside this file.


cdef inline int _raise_errno(int rc) except -1:
    raise OSError(-rc, os.strerror(-rc))


cdef Py_ssize_t _slots(Py_ssize_t buflen, Py_ssize_t stride) except -1:
    if stride <= 0:
        raise ValueError(f"stride must be > 0, got {stride}")
    return buflen // stride


def read_batch(int fd, unsigned char[::1] buf, Py_ssize_t stride, unsigned int[::1] lengths,
               Py_ssize_t max_count=-1):
    """Reads packets into slots 0.. until the device has none left, the batch is full or ``max_count``
    (if >= 0) is reached. Returns the count (0: nothing waiting)."""
    cdef Py_ssize_t n = min(_slots(buf.shape[0], stride), lengths.shape[0])
    if max_count >= 0:
        n = min(n, max_count)
    if n <= 0:
        return 0
    n = min(n, 1 << 30)
    cdef int rc
    with nogil:
        rc = tunio_read(fd, &buf[0], <size_t>stride, <uint32_t *>&lengths[0], <unsigned>n)
    if rc < 0:
        _raise_errno(rc)
    return rc


cdef int _write(int fd, const unsigned char[::1] buf, Py_ssize_t stride, const unsigned int[::1] lengths,
                const unsigned int[::1] offsets, const unsigned int[::1] order, Py_ssize_t count,
                Py_ssize_t start, bint vnet) except -1:
    cdef Py_ssize_t nslots = min(_slots(buf.shape[0], stride), lengths.shape[0])
    cdef const uint32_t *op = NULL
    cdef const uint32_t *ordp = NULL
    if offsets is not None:
        nslots = min(nslots, offsets.shape[0])
        if offsets.shape[0] > 0:
            op = <const uint32_t *>&offsets[0]
    ordp = checked_order(order, start, count, nslots)
    if count == 0:
        return 0
    count = min(count, 1 << 30)
    cdef int rc
    with nogil:
        if vnet:
            rc = tunio_write_plain_vnet(fd, &buf[0], <size_t>stride, <size_t>nslots, <const uint32_t *>&lengths[0],
                                        op, ordp, <unsigned>start, <unsigned>count)
        else:
            rc = tunio_write(fd, &buf[0], <size_t>stride, <size_t>nslots, <const uint32_t *>&lengths[0], op, ordp,
                             <unsigned>start, <unsigned>count)
    if rc < 0:
        _raise_errno(rc)
    return rc


def write_batch(int fd, const unsigned char[::1] buf, Py_ssize_t stride, const unsigned int[::1] lengths,
                const unsigned int[::1] offsets, Py_ssize_t count, Py_ssize_t start=0, bint vnet=False):
    """Writes slots ``start .. start+count-1`` to the device (packet i: ``lengths[i]`` bytes at
    ``i*stride + offsets[i]``, or at the slot start when ``offsets`` is None), each behind a zero
    virtio-net header with ``vnet``. Returns how many went."""
    return _write(fd, buf, stride, lengths, offsets, None, count, start, vnet)


def write_batch_indexed(int fd, const unsigned char[::1] buf, Py_ssize_t stride,
                        const unsigned int[::1] lengths, const unsigned int[::1] offsets,
                        const unsigned int[::1] order, Py_ssize_t count, Py_ssize_t start=0):
    """Writes the slots ``order[start .. start+count-1]`` in that order; returns as ``write_batch``."""
    if order is None:
        raise TypeError("order must be a uint32 array of slot indices")
    return _write(fd, buf, stride, lengths, offsets, order, count, start, False)


VNET_HDR_LEN = TUNIO_VNET_HDR_LEN


cdef class TunReader:
    """Reads a virtio-net-header TUN fd into slot batches, splitting GSO super-packets; a super-packet
    that does not fit the batch's free slots continues in the next call. ``dropped`` counts reads that
    could not be made into valid packets."""

    def __cinit__(self):
        self.r = <tunio_reader *>PyMem_Calloc(1, sizeof(tunio_reader))
        if self.r == NULL:
            raise MemoryError()
        self.dropped = 0

    def __dealloc__(self):
        PyMem_Free(self.r)

    @property
    def pending(self):
        """True while part of a super-packet waits for slots."""
        return self.r.len != 0

    def read_batch(self, int fd, unsigned char[::1] buf, Py_ssize_t stride, unsigned int[::1] lengths,
                   Py_ssize_t max_count=-1):
        """As ``read_batch`` for a vnet-header fd."""
        cdef Py_ssize_t n = min(_slots(buf.shape[0], stride), lengths.shape[0])
        if max_count >= 0:
            n = min(n, max_count)
        if n <= 0:
            return 0
        cdef int rc = self.read_into(fd, &buf[0], stride, <uint32_t *>&lengths[0], <unsigned>min(n, 1 << 30))
        return rc

    cdef int read_into(self, int fd, unsigned char *buf, size_t stride, uint32_t *lengths,
                       unsigned n) except -1:
        cdef int rc
        cdef uint32_t dropped = 0
        with nogil:
            rc = tunio_read_vnet(fd, self.r, buf, stride, lengths, n, &dropped)
        self.dropped += dropped
        if rc < 0:
            _raise_errno(rc)
        return rc


def split(const unsigned char[::1] packet not None, Py_ssize_t stride=2048, Py_ssize_t max_count=128):
    """The packets a vnet-header read of ``packet`` (virtio header + IP packet) is handed out as
    (tests, tools). Raises ValueError when it cannot be made valid."""
    buf = bytearray(stride * max_count)
    cdef unsigned char[::1] b = buf
    cdef uint32_t[::1] lens = memoryview(bytearray(4 * max_count)).cast("I")
    cdef uint32_t nxt = 0
    cdef int k = tunio_gso_split(&packet[0], packet.shape[0], 0, &b[0], stride, &lens[0], max_count, &nxt)
    if k < 0:
        raise ValueError("the packet cannot be split into valid packets")
    if nxt:
        raise ValueError(f"more than {max_count} segments")
    return [bytes(buf[i * stride: i * stride + lens[i]]) for i in range(k)]


def write_vnet(int fd, packets, unsigned int udp_segs=64):
    """Writes IP packets to a vnet-header fd, runs of one flow coalesced into one GSO write (one
    writev per write; at most ``udp_segs`` UDP datagrams in one). Returns (written, failed, first errno,
    writes)."""
    packets = [bytes(p) for p in packets]
    cdef Py_ssize_t n = len(packets), i
    if n == 0:
        return 0, 0, 0, 0
    cdef const unsigned char **ptrs = <const unsigned char **>PyMem_Calloc(n, sizeof(void *))
    cdef uint32_t *lens = <uint32_t *>PyMem_Calloc(n, 4)
    cdef uint32_t *work = <uint32_t *>PyMem_Calloc(3 * n, 4)
    cdef size_t done, failed = 0, writes = 0
    cdef int err = 0
    try:
        if ptrs == NULL or lens == NULL or work == NULL:
            raise MemoryError()
        for i in range(n):
            ptrs[i] = <const unsigned char *><const char *>packets[i]
            lens[i] = len(packets[i])
        with nogil:
            done = tunio_write_vnet_capped(fd, ptrs, lens, n, work, &failed, &err, &writes, udp_segs)
    finally:
        PyMem_Free(<void *>ptrs)
        PyMem_Free(lens)
        PyMem_Free(work)
    return done, failed, err, writes
