# C declarations of the batched UDP I/O, for other Cython modules to cimport (e.g. a router step that
# writes destination records itself).
from libc.stdint cimport uint8_t, uint16_t, uint32_t


cdef extern from "udpio.h" nogil:
    ctypedef struct udpio_addr:
        uint16_t family
        uint16_t port
        uint32_t scope_id
        uint8_t addr[16]

    int UDPIO_ADDR_SIZE
    int UDPIO_DEST_NONE
    int UDPIO_DEST_ONE
    int UDPIO_DEST_SLOT

    int udpio_recv(int fd, unsigned char *buf, size_t stride, uint32_t *lengths, udpio_addr *addrs,
                   unsigned n)
    int udpio_send(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
                   const uint32_t *offsets, const udpio_addr *dests, int dest_mode, const uint32_t *order,
                   unsigned start, unsigned n)

    int UDPIO_GSO_MAX_SEGS
    ctypedef struct udpio_gro_reader:
        unsigned nmsg
        unsigned cur
    int udpio_send_gso(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
                       const uint32_t *offsets, const udpio_addr *dest, const uint32_t *order, unsigned start,
                       unsigned n, int *gso_refused)
    int udpio_gro_recv(int fd, udpio_gro_reader *r, unsigned char *buf, size_t stride, uint32_t *lengths,
                       udpio_addr *addrs, unsigned n)


cdef class GroReader:
    cdef udpio_gro_reader *r


cdef inline const uint32_t *checked_order(const unsigned int[::1] order, Py_ssize_t start, Py_ssize_t count,
                                          Py_ssize_t nslots) except? NULL:
    """The send list of a batch write: ``order[start:start+count]`` when ``order`` is given (returns its
    first entry), else slots ``start..start+count`` (returns NULL). Raises ValueError when the range does
    not fit what it indexes. Shared by udpio's and tunio's batch writes."""
    if count < 0 or start < 0:
        raise ValueError("count and start must be >= 0")
    if order is not None:
        if start + count > order.shape[0]:
            raise ValueError(f"start+count={start + count} exceeds the {order.shape[0]} entries of order")
        if order.shape[0] > 0:
            return <const uint32_t *>&order[0]
    elif start + count > nslots:
        raise ValueError(f"start+count={start + count} exceeds the batch's {nslots} usable slots")
    return NULL
