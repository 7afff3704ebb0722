/* Hop-field MAC primitive: AES-128 on one block and CMAC of one complete block.
 *
 * Rules kept here:
 * - The SCION hop-field MAC input is exactly one 16-byte block, so CMAC reduces to
 *   AES_K(M xor K1).  Everything that depends on the key alone (round keys, K1) is computed
 *   once in hm_key_init and the per-packet cost is one AES block.
 * - AES-NI is used when the CPU has it (checked at run time); otherwise OpenSSL's AES.
 * - No allocation, no global state besides the cached CPU check; a hm_key is read-only after
 *   init, so one key may be used from several threads.
 * - Comparisons of MACs are constant time (hm_ct_equal).
 */
#ifndef SCION_AES_CMAC_H
#define SCION_AES_CMAC_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/aes.h>

#define HM_MAC_LEN 6    /* bytes of the CMAC kept in a hop field */
#define HM_BLOCK 16

typedef struct hm_key {
    uint8_t rk[11 * 16]; /* AES-128 encryption round keys (AES-NI layout); unaligned loads */
    uint8_t k1[16];      /* CMAC subkey K1 */
    int use_ni;          /* 1: AES-NI path, 0: OpenSSL AES_encrypt with `ossl` */
    AES_KEY ossl;
} hm_key;

/* 1 when this CPU has AES-NI (cached after the first call). */
int hm_cpu_has_aesni(void);

/* Expands `key` into `k`.  force_portable != 0 selects the OpenSSL path even with AES-NI
 * (tests use it to check both paths give the same answers). */
void hm_key_init(hm_key *k, const uint8_t key[16], int force_portable);

/* out = AES-128_K(in) (in and out may alias). */
void hm_aes_block(const hm_key *k, const uint8_t in[16], uint8_t out[16]);

/* out = AES-CMAC_K(in) for a single complete 16-byte message (in and out may alias). */
void hm_cmac_block(const hm_key *k, const uint8_t in[16], uint8_t out[16]);

/* Writes the 16-byte SCION hop-field MAC input (pkg/slayers/path/mac.go MACInput):
 * 0,0 | SegID | Timestamp | 0 | ExpTime | ConsIngress | ConsEgress | 0,0, big-endian. */
void hm_mac_input(uint8_t buf[16], uint16_t seg_id, uint32_t timestamp, uint8_t exp_time,
                  uint16_t cons_ingress, uint16_t cons_egress);

/* Full 16-byte hop-field CMAC of the given fields; the hop field carries out[0:6]. */
void hm_hop_mac(const hm_key *k, uint16_t seg_id, uint32_t timestamp, uint8_t exp_time,
                uint16_t cons_ingress, uint16_t cons_egress, uint8_t out[16]);

/* Hop-field MAC straight from a path's bytes: `info` is the 8-byte info field (SegID at 2,
 * Timestamp at 4), `hop` the 12-byte hop field (ExpTime at 1, ConsIngress at 2, ConsEgress at
 * 4, MAC at 6).  Builds the MAC input in registers; returns 1 when hop[6:12] equals the first
 * 6 bytes of the CMAC (constant time), and writes the full CMAC to out16 when it is not NULL.
 * Reads exactly info[0:8] and hop[0:12]. */
int hm_hop_verify(const hm_key *k, const uint8_t *info, const uint8_t *hop, uint8_t *out16);

/* As hm_hop_verify, with the SegID given instead of read from info[2:4] (a router that chains
 * the SegID back verifies before it writes the new value, avoiding a store-to-load stall). */
int hm_hop_verify_seg(const hm_key *k, uint16_t seg_id, const uint8_t *info, const uint8_t *hop,
                      uint8_t *out16);

/* hm_hop_verify_seg over m hop fields at once (ok[i] = verdict of i); with AES-NI the AES
 * rounds of four blocks run interleaved. */
void hm_hop_verify_many(const hm_key *k, size_t m, const uint8_t *const *infos,
                        const uint8_t *const *hops, const uint16_t *segs, uint8_t *ok);

/* A hop-field MAC input already assembled by the caller: the 16 block bytes as two
 * little-endian 64-bit words (bytes 0-7 in lo, 8-15 in hi), and the 6 MAC bytes the hop field
 * carries (hop[6:12]) as a little-endian 48-bit value.  A router that has read the info and hop
 * fields into registers for its checks builds these without touching memory again. */
typedef struct hm_job {
    uint64_t lo, hi;
    uint64_t tag48;
} hm_job;

/* ok[i] = 1 when the first 6 bytes of CMAC_K(block of jobs[i]) equal jobs[i].tag48 (each
 * comparison constant time); with AES-NI the AES rounds of eight blocks run interleaved. */
void hm_verify_jobs(const hm_key *k, size_t m, const hm_job *jobs, uint8_t *ok);

/* 1 when a[0:n] == b[0:n]; time depends on n only. */
int hm_ct_equal(const uint8_t *a, const uint8_t *b, size_t n);

/* Raw-limit helper for benchmarks: for each of n slots (slot i at buf + i*stride, length
 * lens[i]) copy the first `hdr_copy` bytes (bounded by the slot length) into scratch and run
 * `blocks` AES blocks over 16 bytes taken from the copy.  Returns a checksum so that the
 * compiler cannot drop the work. */
uint32_t hm_raw_limit(const hm_key *k, const uint8_t *buf, size_t stride, const uint32_t *lens,
                      size_t n, size_t hdr_copy, unsigned blocks, uint8_t *scratch);

#endif
