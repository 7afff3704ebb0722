# Declarations of csrc/aes_cmac.h for the Cython modules that compile csrc/aes_cmac.c in.
from libc.stdint cimport uint8_t, uint16_t, uint32_t


cdef extern from "aes_cmac.h" nogil:
    enum:
        HM_MAC_LEN
        HM_BLOCK

    ctypedef struct hm_key:
        int use_ni

    int hm_cpu_has_aesni()
    void hm_key_init(hm_key *k, const uint8_t *key, int force_portable)
    void hm_aes_block(const hm_key *k, const uint8_t *inp, uint8_t *out)
    void hm_cmac_block(const hm_key *k, const uint8_t *inp, uint8_t *out)
    void hm_mac_input(uint8_t *buf, uint16_t seg_id, uint32_t timestamp, uint8_t exp_time,
                      uint16_t cons_ingress, uint16_t cons_egress)
    void hm_hop_mac(const hm_key *k, uint16_t seg_id, uint32_t timestamp, uint8_t exp_time,
                    uint16_t cons_ingress, uint16_t cons_egress, uint8_t *out)
    int hm_ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
    int hm_hop_verify(const hm_key *k, const uint8_t *info, const uint8_t *hop, uint8_t *out16)
    int hm_hop_verify_seg(const hm_key *k, uint16_t seg_id, const uint8_t *info, const uint8_t *hop,
                          uint8_t *out16)
    uint32_t hm_raw_limit(const hm_key *k, const uint8_t *buf, size_t stride, const uint32_t *lens,
                          size_t n, size_t hdr_copy, unsigned blocks, uint8_t *scratch)
