# C declarations of the batched TUN I/O, for other Cython modules to cimport.
from libc.stdint cimport uint32_t


cdef extern from "tunio.h" nogil:
    int tunio_read(int fd, unsigned char *buf, size_t stride, uint32_t *lengths, unsigned n)
    int tunio_write(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
                    const uint32_t *offsets, const uint32_t *order, unsigned start, unsigned n)

    int TUNIO_VNET_HDR_LEN
    ctypedef struct tunio_reader:
        uint32_t len
        uint32_t next
    int tunio_gso_split(const unsigned char *pkt, size_t len, uint32_t first, unsigned char *buf, size_t stride,
                        uint32_t *lengths, unsigned n, uint32_t *next_seg)
    int tunio_read_vnet(int fd, tunio_reader *r, unsigned char *buf, size_t stride, uint32_t *lengths, unsigned n,
                        uint32_t *dropped)
    size_t tunio_write_vnet(int fd, const unsigned char *const *ptrs, const uint32_t *lens, size_t n,
                            uint32_t *work, size_t *failed, int *first_errno, size_t *writes)
    size_t tunio_write_vnet_capped(int fd, const unsigned char *const *ptrs, const uint32_t *lens, size_t n,
                                   uint32_t *work, size_t *failed, int *first_errno, size_t *writes,
                                   uint32_t udp_max_segs)
    int tunio_write_plain_vnet(int fd, const unsigned char *buf, size_t stride, size_t nslots,
                               const uint32_t *lengths, const uint32_t *offsets, const uint32_t *order,
                               unsigned start, unsigned n)


cdef class TunReader:
    cdef tunio_reader *r
    cdef public unsigned long long dropped
    cdef int read_into(self, int fd, unsigned char *buf, size_t stride, uint32_t *lengths,
                       unsigned n) except -1
