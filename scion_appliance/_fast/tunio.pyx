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
"""

import os

from libc.stdint cimport uint32_t

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
                Py_ssize_t start) except -1:
    cdef Py_ssize_t nslots = min(_slots(buf.shape[0], stride), lengths.shape[0])
    cdef const uint32_t *op = NULL
    cdef const uint32_t *ordp = NULL
    if offsets is not None:
        nslots = min(nslots, offsets.shape[0])
        if offsets.shape[0] > 0:
            op = <const uint32_t *>&offsets[0]
    if count < 0 or start < 0:
        raise ValueError("count and start must be >= 0")
    if order is not None:
        if start + count > order.shape[0]:
            raise ValueError(f"start+count={start + count} exceeds the {order.shape[0]} entries of order")
        if order.shape[0] > 0:
            ordp = <const uint32_t *>&order[0]
    elif start + count > nslots:
        raise ValueError(f"start+count={start + count} exceeds the batch's {nslots} usable slots")
    if count == 0:
        return 0
    count = min(count, 1 << 30)
    cdef int rc
    with nogil:
        rc = tunio_write(fd, &buf[0], <size_t>stride, <size_t>nslots, <const uint32_t *>&lengths[0], op, ordp,
                         <unsigned>start, <unsigned>count)
    if rc < 0:
        _raise_errno(rc)
    return rc


def write_batch(int fd, const unsigned char[::1] buf, Py_ssize_t stride, const unsigned int[::1] lengths,
                const unsigned int[::1] offsets, Py_ssize_t count, Py_ssize_t start=0):
    """Writes slots ``start .. start+count-1`` to the device (packet i: ``lengths[i]`` bytes at
    ``i*stride + offsets[i]``, or at the slot start when ``offsets`` is None). Returns how many went."""
    return _write(fd, buf, stride, lengths, offsets, None, count, start)


def write_batch_indexed(int fd, const unsigned char[::1] buf, Py_ssize_t stride,
                        const unsigned int[::1] lengths, const unsigned int[::1] offsets,
                        const unsigned int[::1] order, Py_ssize_t count, Py_ssize_t start=0):
    """Writes the slots ``order[start .. start+count-1]`` in that order; returns as ``write_batch``."""
    if order is None:
        raise TypeError("order must be a uint32 array of slot indices")
    return _write(fd, buf, stride, lengths, offsets, order, count, start)
