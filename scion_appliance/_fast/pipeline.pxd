# C view of the data pipeline (csrc/pipeline.h) and of the objects holding its state, for other Cython
# modules to cimport (the data path worker threads deframe with a remote's prefix table and carry).
#
# Rules for users: a PrefixTable, HeaderTemplate or Deframer used by C code outside the GIL must be kept
# alive (a reference held) for as long as that code may run; a Deframer's carry is used by one thread at
# a time (its owner's lock).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from scion_appliance._fast.codec cimport scion_rec_t


cdef extern from "pipeline.h" nogil:
    int PL_SLOW
    int PL_SIG_HDR
    ctypedef struct pl_prefix:
        uint8_t v6
        uint8_t plen
        uint8_t remote
        uint8_t pad
        uint8_t net[16]
    size_t pl_classify(const uint8_t *buf, size_t stride, const uint32_t *lens, size_t n, const pl_prefix *pfx,
                       size_t npfx, uint8_t *remote_out)
    long pl_frame(const uint8_t *inp, size_t in_stride, const uint32_t *in_lens, const uint8_t *remote_of,
                  uint8_t want, size_t n_in, uint8_t *out, size_t out_stride, uint32_t out_off,
                  uint32_t *out_lens, uint8_t *out_status, size_t max_out, uint32_t frame_size, uint8_t session,
                  uint32_t stream, uint64_t *seq, size_t *packets_taken)
    size_t pl_stamp(uint8_t *buf, size_t stride, size_t n, uint32_t *lengths, const uint8_t *status,
                    uint32_t env_off, const uint8_t *tmpl, uint32_t hdr_len, const scion_rec_t *trec,
                    uint32_t *offsets, uint32_t *order)
    size_t pl_rx_select(const uint8_t *buf, size_t stride, const uint32_t *lengths, const scion_rec_t *recs,
                        size_t n, uint16_t port, uint8_t type, uint32_t *offsets, uint32_t *receivers,
                        uint8_t *is_data)
    int pl_same_route(const uint8_t *buf, size_t stride, const scion_rec_t *recs, const uint8_t *addrs,
                      size_t addr_size, size_t i, size_t j)
    ctypedef struct pl_carry:
        int active
    size_t pl_deframe(const uint8_t *buf, size_t stride, const uint32_t *offsets, const uint32_t *lengths,
                      const uint8_t *status, size_t n, const pl_prefix *pfx, size_t npfx, uint8_t remote,
                      pl_carry *carry, uint8_t *arena, size_t arena_size, const uint8_t **pkt_ptrs,
                      uint32_t *pkt_lens, size_t max_pkts, uint8_t *slow, size_t *spoofed, size_t *frames_fast)
    size_t pl_tun_write(int fd, const uint8_t *const *ptrs, const uint32_t *lens, size_t n, size_t *failed,
                        int *first_errno)



cdef class PrefixTable:
    cdef pl_prefix *p
    cdef readonly Py_ssize_t count


cdef class HeaderTemplate:
    cdef bytes raw
    cdef scion_rec_t rec
    cdef readonly Py_ssize_t length


cdef class Deframer:
    cdef pl_carry *carry
    cdef uint8_t *arena
    cdef size_t arena_size
