/* The raw-C limits the benchmarks compare against: plain loops over the same libsodium and replay
 * calls, with no envelope, status, length or Python work. Compiled at bench time by climit.py, not
 * part of the package. Each function times itself (CLOCK_MONOTONIC) and returns nanoseconds. */
#include <sodium.h>
#include <string.h>
#include <time.h>

#include "replay.h"

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int limit_init(void)
{
    return sodium_init();
}

/* Seals n slots (plaintext of len bytes at +16, AD = the 16 bytes at +0) `reps` times. */
uint64_t limit_seal(const unsigned char *key, unsigned char *buf, size_t stride, size_t n, size_t len,
                    size_t reps)
{
    unsigned char nonce[12] = {0};
    uint64_t counter = 0, t0 = now_ns();
    size_t r, i;

    for (r = 0; r < reps; r++) {
        for (i = 0; i < n; i++) {
            unsigned char *p = buf + i * stride;

            memcpy(nonce + 4, &counter, 8);
            counter++;
            crypto_aead_chacha20poly1305_ietf_encrypt_detached(p + 16, p + 16 + len, NULL, p + 16, len, p, 16,
                                                               NULL, nonce, key);
        }
    }
    return now_ns() - t0;
}

/* Opens n slots sealed with counters 0..n-1, `reps` times; the buffer is restored from `pristine`
 * before each pass, outside the timed part. Returns the time, or 0 if any packet failed to verify. */
uint64_t limit_open(const unsigned char *key, unsigned char *buf, const unsigned char *pristine,
                    size_t stride, size_t n, size_t len, size_t reps)
{
    unsigned char nonce[12] = {0};
    uint64_t total = 0;
    size_t r, i;
    int bad = 0;

    for (r = 0; r < reps; r++) {
        uint64_t t0;

        memcpy(buf, pristine, n * stride);
        t0 = now_ns();
        for (i = 0; i < n; i++) {
            unsigned char *p = buf + i * stride;
            uint64_t counter = i;

            memcpy(nonce + 4, &counter, 8);
            bad |= crypto_aead_chacha20poly1305_ietf_decrypt_detached(p + 16, NULL, p + 16, len, p + 16 + len,
                                                                      p, 16, nonce, key);
        }
        total += now_ns() - t0;
    }
    return bad ? 0 : total;
}

/* replay_check over `counters` `reps` times; *accepted gets the count of the last pass. */
uint64_t limit_replay_check(uint64_t window, const uint64_t *counters, size_t n, size_t reps,
                            const uint64_t *commit_first, size_t ncommit, size_t *accepted)
{
    static uint64_t ring[1u << 14];
    replay_window w = {0, window, replay_ring_words(window) - 1, ring};
    volatile size_t sink = 0;
    uint64_t t0;
    size_t r, i, ok = 0;

    if (replay_ring_words(window) > sizeof ring / sizeof ring[0])
        return 0;
    memset(ring, 0, sizeof ring);
    for (i = 0; i < ncommit; i++)
        replay_commit(&w, commit_first[i]);
    t0 = now_ns();
    for (r = 0; r < reps; r++) {
        ok = 0;
        for (i = 0; i < n; i++)
            ok += (size_t)replay_check(&w, counters[i]);
        sink += ok;
    }
    t0 = now_ns() - t0;
    *accepted = ok;
    return t0;
}
