/* Anti-replay window over 64-bit counters: the bitmap ring of RFC 6479, as WireGuard keeps it.
 *
 * The window remembers which of the last `window` counters behind the highest accepted one were seen.
 * Bits live in a ring of 64-bit words; moving forward clears only the words that the new top skips
 * over (at most the whole ring), so no bitmap is ever shifted.
 *
 * Rules kept here:
 * - Header-only (static inline) so every extension that needs it compiles its own copy: no symbol is
 *   shared between shared objects, and a batch loop calls it without a function-call boundary.
 * - Safe without the GIL; no allocation. One window belongs to one receiving session and is used by
 *   one thread at a time (its receive loop); it has no lock.
 * - replay_check never changes state; replay_commit is the only writer. A packet is checked before it is
 *   decrypted and committed only after it authenticated, so a forgery never moves the window.
 * - Counters at or past REPLAY_REJECT_AFTER_MESSAGES are refused (WireGuard's limit, 2^64 - 2^13 - 1):
 *   a sender must rekey long before, and the +1 below can never overflow.
 * - Internally counters are shifted by one (`next` = highest accepted + 1) so that 0 means "nothing
 *   accepted yet" and counter 0 is an ordinary first packet (the WireGuard formulation).
 */
#ifndef SCION_REPLAY_H
#define SCION_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#define REPLAY_REJECT_AFTER_MESSAGES (UINT64_MAX - (UINT64_C(1) << 13))
#define REPLAY_MIN_WINDOW 64u
#define REPLAY_MAX_WINDOW (1u << 24)

typedef struct {
    uint64_t next;    /* highest accepted counter + 1; 0 before the first */
    uint64_t window;  /* a counter up to `window` behind the highest accepted one is still accepted */
    uint64_t mask;    /* ring words - 1 (the ring has a power-of-two number of words) */
    uint64_t *ring;   /* ring[i] holds shifted counters c+1 with (c+1)/64 == i (mod words) */
} replay_window;

/* Number of 64-bit ring words for a window: the window plus one word of slack (the word the top sits in
 * is only partly inside the window), rounded up to a power of two so the index is a mask. */
static inline size_t replay_ring_words(uint64_t window)
{
    size_t need = (size_t)((window + 63) / 64) + 1, words = 1;
    while (words < need)
        words <<= 1;
    return words;
}

/* Would `counter` be accepted now? No state change. */
static inline int replay_check(const replay_window *w, uint64_t counter)
{
    uint64_t c1;

    if (counter >= REPLAY_REJECT_AFTER_MESSAGES)
        return 0;
    c1 = counter + 1;
    if (c1 > w->next)
        return 1;
    if (w->next - c1 > w->window)
        return 0;
    return !((w->ring[(c1 >> 6) & w->mask] >> (c1 & 63)) & 1);
}

/* Accepts `counter` once: returns 1 and records it when it is fresh and inside the window, else 0. */
static inline int replay_commit(replay_window *w, uint64_t counter)
{
    uint64_t c1, index, bit, *word;

    if (counter >= REPLAY_REJECT_AFTER_MESSAGES)
        return 0;
    c1 = counter + 1;
    index = c1 >> 6;
    if (c1 > w->next) {
        uint64_t current = w->next >> 6, top = index - current, i;

        /* A jump past the whole ring clears each word once, not `top` times. */
        if (top > w->mask + 1)
            top = w->mask + 1;
        for (i = 1; i <= top; i++)
            w->ring[(current + i) & w->mask] = 0;
        w->next = c1;
    } else if (w->next - c1 > w->window) {
        return 0;
    }
    word = &w->ring[index & w->mask];
    bit = UINT64_C(1) << (c1 & 63);
    if (*word & bit)
        return 0;
    *word |= bit;
    return 1;
}

/* Batch forms over the shared per-packet status convention: status[i] == 0 means "still alive";
 * a slot with nonzero status is skipped and keeps its code; a rejected slot gets `reason`.
 * Both return how many slots are alive afterwards. */
static inline size_t replay_check_batch(const replay_window *w, const uint64_t *counters, uint8_t *status,
                                        size_t n, uint8_t reason)
{
    size_t i, alive = 0;

    for (i = 0; i < n; i++) {
        if (status[i])
            continue;
        if (replay_check(w, counters[i]))
            alive++;
        else
            status[i] = reason;
    }
    return alive;
}

static inline size_t replay_commit_batch(replay_window *w, const uint64_t *counters, uint8_t *status,
                                         size_t n, uint8_t reason)
{
    size_t i, alive = 0;

    for (i = 0; i < n; i++) {
        if (status[i])
            continue;
        if (replay_commit(w, counters[i]))
            alive++;
        else
            status[i] = reason;
    }
    return alive;
}

#endif
