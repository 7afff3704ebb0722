/* Sealed envelopes in batches over libsodium: see aead_batch.h for the layout and the rules. */
#include "aead_batch.h"

#include <sodium.h>
#include <string.h>

#include "tunnel_drop.h"

static inline void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline void put_le64(unsigned char *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t get_le64(const unsigned char *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

void aead_put_header(unsigned char *p, uint8_t type, uint32_t receiver, uint64_t counter)
{
    p[0] = type;
    p[1] = p[2] = p[3] = 0;
    put_le32(p + 4, receiver);
    put_le64(p + 8, counter);
}

/* Whether slot i would be sealed (status 0 and its plaintext fits); marks it malformed otherwise. */
static inline int seal_fits(size_t stride, size_t i, size_t o, size_t len, uint8_t *status)
{
    if (status[i])
        return 0;
    if (o > stride || stride - o < AEAD_OVERHEAD || len > stride - o - AEAD_OVERHEAD) {
        status[i] = TUNNEL_DROP_MALFORMED;
        return 0;
    }
    return 1;
}

size_t aead_seal_batch(const unsigned char *key, unsigned char *buf, size_t stride, size_t n,
                       uint32_t *lengths, const uint32_t *offsets, uint32_t off, uint8_t *status,
                       uint64_t *counters_out, uint8_t type, uint32_t receiver, uint64_t *next_counter)
{
    unsigned char nonce[AEAD_NONCE_LEN] = {0};
    uint64_t counter, want = 0;
    size_t i, sealed = 0;

    for (i = 0; i < n; i++)
        want += (uint64_t)seal_fits(stride, i, offsets ? offsets[i] : off, lengths[i], status);
    if (want == 0)
        return 0;
    /* One atomic reservation of the whole run: another thread sealing with this key at the same time
     * gets a disjoint run, so no counter (nonce) is ever used twice. The counter never passes the
     * limit: slots beyond it get no counter and are marked exhausted below. */
    counter = __atomic_load_n(next_counter, __ATOMIC_RELAXED);
    uint64_t take;
    do {
        uint64_t room = counter >= REPLAY_REJECT_AFTER_MESSAGES ? 0 : REPLAY_REJECT_AFTER_MESSAGES - counter;
        take = want < room ? want : room;
    } while (!__atomic_compare_exchange_n(next_counter, &counter, counter + take, 1, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    uint64_t end = counter + take;
    for (i = 0; i < n; i++) {
        size_t o = offsets ? offsets[i] : off, len = lengths[i];
        unsigned char *p;

        if (status[i])
            continue;
        if (counter >= end) {
            status[i] = TUNNEL_DROP_EXHAUSTED;
            continue;
        }
        p = buf + i * stride + o;
        aead_put_header(p, type, receiver, counter);
        put_le64(nonce + 4, counter);
        crypto_aead_chacha20poly1305_ietf_encrypt_detached(p + AEAD_HEADER_LEN, p + AEAD_HEADER_LEN + len,
                                                           NULL, p + AEAD_HEADER_LEN, len, p,
                                                           AEAD_HEADER_LEN, NULL, nonce, key);
        lengths[i] = (uint32_t)(o + AEAD_OVERHEAD + len);
        if (counters_out)
            counters_out[i] = counter;
        counter++;
        sealed++;
    }
    return sealed;
}

/* Validates the slot's envelope bounds and header; returns its start or NULL after marking status. */
static inline const unsigned char *envelope_at(const unsigned char *buf, size_t stride, size_t i,
                                               size_t o, size_t len, uint8_t type, uint8_t *status)
{
    const unsigned char *p;

    if (len > stride || o > len || len - o < AEAD_OVERHEAD) {
        status[i] = TUNNEL_DROP_MALFORMED;
        return NULL;
    }
    p = buf + i * stride + o;
    if (p[0] != type) {
        status[i] = TUNNEL_DROP_TYPE;
        return NULL;
    }
    return p;
}

size_t aead_read_headers(const unsigned char *buf, size_t stride, size_t n, const uint32_t *lengths,
                         const uint32_t *offsets, uint32_t off, uint8_t *status, uint64_t *counters,
                         uint32_t *receivers, uint8_t type)
{
    size_t i, alive = 0;

    for (i = 0; i < n; i++) {
        const unsigned char *p;

        if (status[i])
            continue;
        p = envelope_at(buf, stride, i, offsets ? offsets[i] : off, lengths[i], type, status);
        if (!p)
            continue;
        counters[i] = get_le64(p + 8);
        if (receivers)
            receivers[i] = get_le32(p + 4);
        alive++;
    }
    return alive;
}

size_t aead_open_batch(const unsigned char *key, unsigned char *buf, size_t stride, size_t n,
                       uint32_t *lengths, const uint32_t *offsets, uint32_t off, uint8_t *status,
                       uint64_t *counters_out, uint8_t type, int64_t receiver, replay_window *window)
{
    unsigned char nonce[AEAD_NONCE_LEN] = {0};
    size_t i, alive = 0;

    for (i = 0; i < n; i++) {
        size_t o = offsets ? offsets[i] : off, clen;
        unsigned char *p;
        uint64_t counter;

        if (status[i])
            continue;
        counters_out[i] = 0;
        p = (unsigned char *)envelope_at(buf, stride, i, o, lengths[i], type, status);
        if (!p)
            goto dropped;
        counter = get_le64(p + 8);
        counters_out[i] = counter;
        if (receiver >= 0 && get_le32(p + 4) != (uint32_t)receiver) {
            status[i] = TUNNEL_DROP_RECEIVER;
            goto dropped;
        }
        if (window && !replay_check(window, counter)) {
            status[i] = TUNNEL_DROP_REPLAYED;
            goto dropped;
        }
        clen = lengths[i] - o - AEAD_OVERHEAD;
        memcpy(nonce + 4, p + 8, 8);
        if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(p + AEAD_HEADER_LEN, NULL, p + AEAD_HEADER_LEN,
                                                               clen, p + AEAD_HEADER_LEN + clen, p,
                                                               AEAD_HEADER_LEN, nonce, key) != 0) {
            status[i] = TUNNEL_DROP_FORGED;
            goto dropped;
        }
        if (window && !replay_commit(window, counter)) {
            /* The same packet twice in one batch: both passed the check, the second commit fails. */
            sodium_memzero(p + AEAD_HEADER_LEN, clen);
            status[i] = TUNNEL_DROP_REPLAYED;
            goto dropped;
        }
        lengths[i] = (uint32_t)clen;
        alive++;
        continue;
    dropped:
        lengths[i] = 0;
    }
    return alive;
}
