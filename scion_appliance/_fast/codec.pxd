# C declarations of the SCION packet parser, for other Cython modules to cimport.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "scion_parse.h" nogil:
    int SCION_OK
    int SCION_REASON_COUNT
    ctypedef struct scion_rec_t:
        uint64_t dst_ia
        uint64_t src_ia
        uint32_t flow_id
        uint16_t status
        uint16_t err_offset
        uint16_t hdr_len
        uint16_t payload_len
        uint16_t dst_host_off
        uint16_t src_host_off
        uint16_t path_off
        uint16_t path_len
        uint16_t hbh_off
        uint16_t hbh_len
        uint16_t e2e_off
        uint16_t e2e_len
        uint16_t l4_off
        uint16_t l4_len
        uint16_t src_port
        uint16_t dst_port
        uint8_t version
        uint8_t traffic_class
        uint8_t next_hdr
        uint8_t l4_proto
        uint8_t path_type
        uint8_t dst_addr_type
        uint8_t src_addr_type
        uint8_t dst_host_len
        uint8_t src_host_len
        uint8_t curr_inf
        uint8_t curr_hf
        uint8_t num_inf
        uint8_t num_hops
        uint8_t seg_len[3]
        uint8_t scmp_type
        uint8_t scmp_code

    int scion_parse(const uint8_t *pkt, size_t len, scion_rec_t *rec)
    size_t scion_parse_batch(const uint8_t *slots, size_t stride, const uint32_t *lengths, size_t count,
                             scion_rec_t *recs)
    uint16_t scion_l4_checksum(const uint8_t *pkt, const scion_rec_t *rec, int zero_field)
    const char *scion_reason_names[]


cdef class ScionRecords:
    cdef scion_rec_t *recs
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t count
