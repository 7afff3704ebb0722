# C declarations of the anti-replay window (csrc/replay.h), for other Cython modules to cimport.
from libc.stdint cimport uint8_t, uint64_t


cdef extern from "replay.h" nogil:
    uint64_t REPLAY_REJECT_AFTER_MESSAGES
    unsigned int REPLAY_MIN_WINDOW
    unsigned int REPLAY_MAX_WINDOW
    ctypedef struct replay_window:
        uint64_t next
        uint64_t window
        uint64_t mask
        uint64_t *ring
    size_t replay_ring_words(uint64_t window)
    int replay_check(const replay_window *w, uint64_t counter)
    int replay_commit(replay_window *w, uint64_t counter)
    size_t replay_check_batch(const replay_window *w, const uint64_t *counters, uint8_t *status, size_t n,
                              uint8_t reason)
    size_t replay_commit_batch(replay_window *w, const uint64_t *counters, uint8_t *status, size_t n,
                               uint8_t reason)


cdef extern from "tunnel_drop.h" nogil:
    enum tunnel_drop:
        TUNNEL_OK
        TUNNEL_DROP_MALFORMED
        TUNNEL_DROP_TYPE
        TUNNEL_DROP_RECEIVER
        TUNNEL_DROP_REPLAYED
        TUNNEL_DROP_FORGED
        TUNNEL_DROP_EXHAUSTED
        TUNNEL_DROP_COUNT
    const char *tunnel_drop_names[]


cdef class ReplayWindow:
    cdef replay_window w
    cpdef bint check(self, uint64_t counter)
    cpdef bint commit(self, uint64_t counter)
