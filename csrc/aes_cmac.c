/* AES-128 block and single-block CMAC for hop-field MACs.  See aes_cmac.h for the rules. */
#define OPENSSL_SUPPRESS_DEPRECATED 1 /* AES_encrypt: a const key schedule, no context to share */

#include "aes_cmac.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define HM_X86 1
#include <immintrin.h>
#endif

static int hm_ni_state = -1; /* -1 unknown, 0 absent, 1 present; a benign race */

int hm_cpu_has_aesni(void) {
#ifdef HM_X86
    if (hm_ni_state < 0) {
        __builtin_cpu_init();
        hm_ni_state = __builtin_cpu_supports("aes") && __builtin_cpu_supports("sse2") ? 1 : 0;
    }
    return hm_ni_state;
#else
    return 0;
#endif
}

#ifdef HM_X86
#define HM_NI __attribute__((target("aes,sse2")))

HM_NI static inline __m128i hm_expand_step(__m128i key, __m128i gen) {
    gen = _mm_shuffle_epi32(gen, 0xff);
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    return _mm_xor_si128(key, gen);
}

HM_NI static void hm_expand_ni(uint8_t rk[11 * 16], const uint8_t key[16]) {
    __m128i k = _mm_loadu_si128((const __m128i *)key);
    _mm_storeu_si128((__m128i *)rk, k);
/* _mm_aeskeygenassist_si128 needs an immediate round constant, hence the unrolled steps. */
#define HM_STEP(i, rcon)                                                       \
    k = hm_expand_step(k, _mm_aeskeygenassist_si128(k, rcon));                 \
    _mm_storeu_si128((__m128i *)(rk + 16 * (i)), k);
    HM_STEP(1, 0x01)
    HM_STEP(2, 0x02)
    HM_STEP(3, 0x04)
    HM_STEP(4, 0x08)
    HM_STEP(5, 0x10)
    HM_STEP(6, 0x20)
    HM_STEP(7, 0x40)
    HM_STEP(8, 0x80)
    HM_STEP(9, 0x1b)
    HM_STEP(10, 0x36)
#undef HM_STEP
}

HM_NI static inline __m128i hm_encrypt_ni(const uint8_t *rk, __m128i b) {
    b = _mm_xor_si128(b, _mm_loadu_si128((const __m128i *)rk));
    for (int r = 1; r < 10; r++)
        b = _mm_aesenc_si128(b, _mm_loadu_si128((const __m128i *)(rk + 16 * r)));
    return _mm_aesenclast_si128(b, _mm_loadu_si128((const __m128i *)(rk + 160)));
}

HM_NI static void hm_aes_ni(const hm_key *k, const uint8_t in[16], uint8_t out[16]) {
    __m128i b = _mm_loadu_si128((const __m128i *)in);
    _mm_storeu_si128((__m128i *)out, hm_encrypt_ni(k->rk, b));
}

HM_NI static void hm_cmac_ni(const hm_key *k, const uint8_t in[16], uint8_t out[16]) {
    __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)in),
                              _mm_loadu_si128((const __m128i *)k->k1));
    _mm_storeu_si128((__m128i *)out, hm_encrypt_ni(k->rk, b));
}
#endif

void hm_aes_block(const hm_key *k, const uint8_t in[16], uint8_t out[16]) {
#ifdef HM_X86
    if (k->use_ni) {
        hm_aes_ni(k, in, out);
        return;
    }
#endif
    AES_encrypt(in, out, &k->ossl);
}

void hm_cmac_block(const hm_key *k, const uint8_t in[16], uint8_t out[16]) {
#ifdef HM_X86
    if (k->use_ni) {
        hm_cmac_ni(k, in, out);
        return;
    }
#endif
    uint8_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = in[i] ^ k->k1[i];
    AES_encrypt(m, out, &k->ossl);
}

void hm_key_init(hm_key *k, const uint8_t key[16], int force_portable) {
    memset(k, 0, sizeof(*k));
    AES_set_encrypt_key(key, 128, &k->ossl);
    k->use_ni = 0;
#ifdef HM_X86
    if (!force_portable && hm_cpu_has_aesni()) {
        hm_expand_ni(k->rk, key);
        k->use_ni = 1;
    }
#else
    (void)force_portable;
#endif
    /* RFC 4493 subkey: L = AES_K(0^128); K1 = L << 1, xor 0x87 into the last byte if the
     * top bit of L was set.  Done without a data-dependent branch. */
    uint8_t zero[16] = {0}, l[16];
    hm_aes_block(k, zero, l);
    uint8_t carry = (uint8_t)(l[0] >> 7);
    for (int i = 0; i < 15; i++)
        k->k1[i] = (uint8_t)((l[i] << 1) | (l[i + 1] >> 7));
    k->k1[15] = (uint8_t)((l[15] << 1) ^ (0x87 & (uint8_t)(0 - carry)));
    memset(l, 0, sizeof(l));
}

void hm_mac_input(uint8_t b[16], uint16_t seg_id, uint32_t ts, uint8_t exp_time,
                  uint16_t cons_ingress, uint16_t cons_egress) {
    b[0] = 0;
    b[1] = 0;
    b[2] = (uint8_t)(seg_id >> 8);
    b[3] = (uint8_t)seg_id;
    b[4] = (uint8_t)(ts >> 24);
    b[5] = (uint8_t)(ts >> 16);
    b[6] = (uint8_t)(ts >> 8);
    b[7] = (uint8_t)ts;
    b[8] = 0;
    b[9] = exp_time;
    b[10] = (uint8_t)(cons_ingress >> 8);
    b[11] = (uint8_t)cons_ingress;
    b[12] = (uint8_t)(cons_egress >> 8);
    b[13] = (uint8_t)cons_egress;
    b[14] = 0;
    b[15] = 0;
}

void hm_hop_mac(const hm_key *k, uint16_t seg_id, uint32_t ts, uint8_t exp_time,
                uint16_t cons_ingress, uint16_t cons_egress, uint8_t out[16]) {
    uint8_t in[16];
    hm_mac_input(in, seg_id, ts, exp_time, cons_ingress, cons_egress);
    hm_cmac_block(k, in, out);
}

int hm_ct_equal(const uint8_t *a, const uint8_t *b, size_t n) {
    uint32_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= (uint32_t)(a[i] ^ b[i]);
    /* One final comparison of the accumulated difference: no early exit on the first
     * differing byte. */
    return (int)(1 & ((acc - 1) >> 8));
}

static inline uint64_t hm_mac48(const uint8_t *p) {
    uint32_t lo;
    uint16_t hi;
    memcpy(&lo, p, 4);
    memcpy(&hi, p + 4, 2);
    return (uint64_t)lo | ((uint64_t)hi << 32);
}

#ifdef HM_X86
/* x86 is little-endian: the MAC input block is info[0:8] with bytes 0-1 cleared followed by
 * hop[0:8] keeping bytes 1-5 (ExpTime, ConsIngress, ConsEgress) -- no byte-wise stores, so no
 * store-forwarding stall before the AES. */
HM_NI static int hm_hop_verify_ni(const hm_key *k, int seg_given, uint16_t seg_id,
                                  const uint8_t *info, const uint8_t *hop, uint8_t *out16) {
    uint64_t a, b;
    memcpy(&a, info, 8);
    memcpy(&b, hop, 8);
    a &= ~(uint64_t)0xffff;
    if (seg_given)
        a = (a & ~(uint64_t)0xffffffffULL) | ((uint64_t)(uint16_t)((seg_id >> 8) | (seg_id << 8)) << 16);
    b &= (uint64_t)0x0000ffffffffff00ULL;
    __m128i m = _mm_set_epi64x((long long)b, (long long)a);
    m = _mm_xor_si128(m, _mm_loadu_si128((const __m128i *)k->k1));
    __m128i t = hm_encrypt_ni(k->rk, m);
    if (out16)
        _mm_storeu_si128((__m128i *)out16, t);
    uint64_t diff = ((uint64_t)_mm_cvtsi128_si64(t) ^ hm_mac48(hop + 6)) & 0xffffffffffffULL;
    return diff == 0;
}
#endif

#ifdef HM_X86
HM_NI static inline __m128i hm_block_ni(const hm_key *k, uint16_t seg_id, const uint8_t *info,
                                        const uint8_t *hop) {
    uint64_t a, b;
    memcpy(&a, info, 8);
    memcpy(&b, hop, 8);
    a = (a & ~(uint64_t)0xffffffffULL) | ((uint64_t)(uint16_t)((seg_id >> 8) | (seg_id << 8)) << 16);
    b &= (uint64_t)0x0000ffffffffff00ULL;
    return _mm_xor_si128(_mm_set_epi64x((long long)b, (long long)a),
                         _mm_loadu_si128((const __m128i *)k->k1));
}

HM_NI static inline uint8_t hm_tag_ok(__m128i t, const uint8_t *hop) {
    uint64_t diff = ((uint64_t)_mm_cvtsi128_si64(t) ^ hm_mac48(hop + 6)) & 0xffffffffffffULL;
    return (uint8_t)(diff == 0);
}

HM_NI static void hm_verify_many_ni(const hm_key *k, size_t m, const uint8_t *const *infos,
                                    const uint8_t *const *hops, const uint16_t *segs, uint8_t *ok) {
    __m128i rk[11];
    for (int r = 0; r < 11; r++)
        rk[r] = _mm_loadu_si128((const __m128i *)(k->rk + 16 * r));
    size_t i = 0;
    for (; i + 4 <= m; i += 4) {
        __m128i b0 = _mm_xor_si128(hm_block_ni(k, segs[i], infos[i], hops[i]), rk[0]);
        __m128i b1 = _mm_xor_si128(hm_block_ni(k, segs[i + 1], infos[i + 1], hops[i + 1]), rk[0]);
        __m128i b2 = _mm_xor_si128(hm_block_ni(k, segs[i + 2], infos[i + 2], hops[i + 2]), rk[0]);
        __m128i b3 = _mm_xor_si128(hm_block_ni(k, segs[i + 3], infos[i + 3], hops[i + 3]), rk[0]);
        for (int r = 1; r < 10; r++) {
            b0 = _mm_aesenc_si128(b0, rk[r]);
            b1 = _mm_aesenc_si128(b1, rk[r]);
            b2 = _mm_aesenc_si128(b2, rk[r]);
            b3 = _mm_aesenc_si128(b3, rk[r]);
        }
        ok[i] = hm_tag_ok(_mm_aesenclast_si128(b0, rk[10]), hops[i]);
        ok[i + 1] = hm_tag_ok(_mm_aesenclast_si128(b1, rk[10]), hops[i + 1]);
        ok[i + 2] = hm_tag_ok(_mm_aesenclast_si128(b2, rk[10]), hops[i + 2]);
        ok[i + 3] = hm_tag_ok(_mm_aesenclast_si128(b3, rk[10]), hops[i + 3]);
    }
    for (; i < m; i++) {
        __m128i b = _mm_xor_si128(hm_block_ni(k, segs[i], infos[i], hops[i]), rk[0]);
        for (int r = 1; r < 10; r++)
            b = _mm_aesenc_si128(b, rk[r]);
        ok[i] = hm_tag_ok(_mm_aesenclast_si128(b, rk[10]), hops[i]);
    }
}
#endif

#ifdef HM_X86
/* The CMAC of a one-block message is AES_K(M xor K1): K1 is folded into round key 0.  Eight
 * blocks in flight cover the AES units' latency (about 4 cycles, two units on recent cores). */
HM_NI static void hm_verify_jobs_ni(const hm_key *k, size_t m, const hm_job *jobs, uint8_t *ok) {
    __m128i rk[11];
    for (int r = 0; r < 11; r++)
        rk[r] = _mm_loadu_si128((const __m128i *)(k->rk + 16 * r));
    const __m128i k0 = _mm_xor_si128(rk[0], _mm_loadu_si128((const __m128i *)k->k1));
    const uint64_t mask48 = 0xffffffffffffULL;
#define HM_IN(j) _mm_xor_si128(_mm_set_epi64x((long long)jobs[i + (j)].hi, (long long)jobs[i + (j)].lo), k0)
#define HM_OK(b, j) \
    ok[i + (j)] = (uint8_t)((((uint64_t)_mm_cvtsi128_si64(_mm_aesenclast_si128(b, rk[10])) ^ jobs[i + (j)].tag48) & mask48) == 0)
    size_t i = 0;
    for (; i + 8 <= m; i += 8) {
        __m128i b0 = HM_IN(0), b1 = HM_IN(1), b2 = HM_IN(2), b3 = HM_IN(3);
        __m128i b4 = HM_IN(4), b5 = HM_IN(5), b6 = HM_IN(6), b7 = HM_IN(7);
        for (int r = 1; r < 10; r++) {
            b0 = _mm_aesenc_si128(b0, rk[r]);
            b1 = _mm_aesenc_si128(b1, rk[r]);
            b2 = _mm_aesenc_si128(b2, rk[r]);
            b3 = _mm_aesenc_si128(b3, rk[r]);
            b4 = _mm_aesenc_si128(b4, rk[r]);
            b5 = _mm_aesenc_si128(b5, rk[r]);
            b6 = _mm_aesenc_si128(b6, rk[r]);
            b7 = _mm_aesenc_si128(b7, rk[r]);
        }
        HM_OK(b0, 0);
        HM_OK(b1, 1);
        HM_OK(b2, 2);
        HM_OK(b3, 3);
        HM_OK(b4, 4);
        HM_OK(b5, 5);
        HM_OK(b6, 6);
        HM_OK(b7, 7);
    }
    for (; i + 4 <= m; i += 4) {
        __m128i b0 = HM_IN(0), b1 = HM_IN(1), b2 = HM_IN(2), b3 = HM_IN(3);
        for (int r = 1; r < 10; r++) {
            b0 = _mm_aesenc_si128(b0, rk[r]);
            b1 = _mm_aesenc_si128(b1, rk[r]);
            b2 = _mm_aesenc_si128(b2, rk[r]);
            b3 = _mm_aesenc_si128(b3, rk[r]);
        }
        HM_OK(b0, 0);
        HM_OK(b1, 1);
        HM_OK(b2, 2);
        HM_OK(b3, 3);
    }
    for (; i < m; i++) {
        __m128i b0 = HM_IN(0);
        for (int r = 1; r < 10; r++)
            b0 = _mm_aesenc_si128(b0, rk[r]);
        HM_OK(b0, 0);
    }
#undef HM_IN
#undef HM_OK
}
#endif

static inline void hm_st64le(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void hm_verify_jobs(const hm_key *k, size_t m, const hm_job *jobs, uint8_t *ok) {
#ifdef HM_X86
    if (k->use_ni) {
        hm_verify_jobs_ni(k, m, jobs, ok);
        return;
    }
#endif
    for (size_t i = 0; i < m; i++) {
        uint8_t in[16], full[16], want[6];
        hm_st64le(in, jobs[i].lo);
        hm_st64le(in + 8, jobs[i].hi);
        hm_cmac_block(k, in, full);
        for (int j = 0; j < 6; j++)
            want[j] = (uint8_t)(jobs[i].tag48 >> (8 * j));
        ok[i] = (uint8_t)hm_ct_equal(full, want, HM_MAC_LEN);
    }
}

static int hm_hop_verify_any(const hm_key *k, int seg_given, uint16_t seg_id, const uint8_t *info,
                             const uint8_t *hop, uint8_t *out16) {
#ifdef HM_X86
    if (k->use_ni)
        return hm_hop_verify_ni(k, seg_given, seg_id, info, hop, out16);
#endif
    uint8_t in[16], full[16];
    memset(in, 0, sizeof(in));
    memcpy(in + 2, info + 2, 6);
    if (seg_given) {
        in[2] = (uint8_t)(seg_id >> 8);
        in[3] = (uint8_t)seg_id;
    }
    memcpy(in + 9, hop + 1, 5);
    hm_cmac_block(k, in, full);
    if (out16)
        memcpy(out16, full, 16);
    return hm_ct_equal(full, hop + 6, HM_MAC_LEN);
}

int hm_hop_verify(const hm_key *k, const uint8_t *info, const uint8_t *hop, uint8_t *out16) {
    return hm_hop_verify_any(k, 0, 0, info, hop, out16);
}

int hm_hop_verify_seg(const hm_key *k, uint16_t seg_id, const uint8_t *info, const uint8_t *hop,
                      uint8_t *out16) {
    return hm_hop_verify_any(k, 1, seg_id, info, hop, out16);
}

void hm_hop_verify_many(const hm_key *k, size_t m, const uint8_t *const *infos,
                        const uint8_t *const *hops, const uint16_t *segs, uint8_t *ok) {
#ifdef HM_X86
    if (k->use_ni) {
        hm_verify_many_ni(k, m, infos, hops, segs, ok);
        return;
    }
#endif
    for (size_t i = 0; i < m; i++)
        ok[i] = (uint8_t)hm_hop_verify_any(k, 1, segs[i], infos[i], hops[i], NULL);
}

uint32_t hm_raw_limit(const hm_key *k, const uint8_t *buf, size_t stride, const uint32_t *lens,
                      size_t n, size_t hdr_copy, unsigned blocks, uint8_t *scratch) {
    uint32_t sum = 0;
    uint8_t out[16];
    for (size_t i = 0; i < n; i++) {
        size_t c = lens[i] < hdr_copy ? lens[i] : hdr_copy;
        if (c < 16)
            continue;
        memcpy(scratch, buf + i * stride, c);
        for (unsigned j = 0; j < blocks; j++) {
            /* Independent blocks, as a router's MACs of one packet are. */
            hm_cmac_block(k, scratch + c - 16 - (j % 4), out);
            sum += out[0];
        }
    }
    return sum;
}
