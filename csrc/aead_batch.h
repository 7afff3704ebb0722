/* Sealed envelopes in batches: ChaCha20-Poly1305 (IETF, libsodium) over the shared slot-batch layout.
 *
 * Envelope (WireGuard's transport message is the model):
 *   type (1) | reserved, zero (3) | receiver index (4, LE) | counter (8, LE) | ciphertext | tag (16)
 * The AEAD nonce is 4 zero bytes followed by the counter (LE); the associated data is the 16-byte
 * envelope header, so type, receiver index and counter are all authenticated.
 *
 * Batch layout: slot i starts at buf + i*stride; its envelope starts `o` bytes in, where o is
 * offsets[i] when offsets is given and `off` otherwise (the SCION/UDP header sits before it).
 * Lengths follow the I/O around each call:
 * - seal: lengths[i] in = plaintext length (plaintext at o+16); out = datagram length o + 32 + plaintext,
 *   i.e. what sendmmsg moves from the slot's start.
 * - open: lengths[i] in = datagram length from the slot's start (what recvmmsg gave); out = plaintext
 *   length (plaintext at o+16), or 0 when the slot is dropped.
 *
 * Rules kept here:
 * - Safe without the GIL; no allocation; all work happens in place inside each slot's own bytes.
 * - Per-packet status: 0 = alive. A slot whose status is nonzero on entry is skipped untouched; a slot
 *   that fails gets a tunnel_drop code and the batch goes on.
 * - Counters: seal reserves its run of consecutive counters from *next_counter in one atomic step
 *   (threads sealing with one key at once get disjoint runs) and never one at or past the reject limit; open, when given a replay window, checks each counter before decrypting and commits it only
 *   after the tag verified (a forgery never moves the window; the second copy of a packet within one
 *   batch fails its commit).
 */
#ifndef SCION_AEAD_BATCH_H
#define SCION_AEAD_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "replay.h"

#define AEAD_KEY_LEN 32
#define AEAD_HEADER_LEN 16
#define AEAD_TAG_LEN 16
#define AEAD_OVERHEAD (AEAD_HEADER_LEN + AEAD_TAG_LEN)
#define AEAD_NONCE_LEN 12
#define AEAD_TYPE_DATA 4 /* WireGuard's numbering: 1 initiation, 2 response, 3 cookie reply, 4 data */

/* Writes the 16-byte envelope header at p. */
void aead_put_header(unsigned char *p, uint8_t type, uint32_t receiver, uint64_t counter);

/* The send counter as another thread may be advancing it. */
static inline uint64_t aead_counter_load(const uint64_t *counter)
{
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

/* Seals the live slots of a batch; returns how many were sealed. counters_out may be NULL. */
size_t aead_seal_batch(const unsigned char *key, unsigned char *buf, size_t stride, size_t n,
                       uint32_t *lengths, const uint32_t *offsets, uint32_t off, uint8_t *status,
                       uint64_t *counters_out, uint8_t type, uint32_t receiver, uint64_t *next_counter);

/* Reads the headers of the live slots without opening them: counters (and receiver indices, when
 * receivers is not NULL) of envelopes of the given type; malformed or other-type slots are marked.
 * Returns how many slots are alive. */
size_t aead_read_headers(const unsigned char *buf, size_t stride, size_t n, const uint32_t *lengths,
                         const uint32_t *offsets, uint32_t off, uint8_t *status, uint64_t *counters,
                         uint32_t *receivers, uint8_t type);

/* Opens the live slots of a batch in place; returns how many are alive afterwards.
 * receiver < 0: any receiver index; window may be NULL (then the caller does the replay steps). */
size_t aead_open_batch(const unsigned char *key, unsigned char *buf, size_t stride, size_t n,
                       uint32_t *lengths, const uint32_t *offsets, uint32_t off, uint8_t *status,
                       uint64_t *counters_out, uint8_t type, int64_t receiver, replay_window *window);

#endif
