# C declarations of the batched TUN I/O, for other Cython modules to cimport.
from libc.stdint cimport uint32_t


cdef extern from "tunio.h" nogil:
    int tunio_read(int fd, unsigned char *buf, size_t stride, uint32_t *lengths, unsigned n)
    int tunio_write(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
                    const uint32_t *offsets, const uint32_t *order, unsigned start, unsigned n)
