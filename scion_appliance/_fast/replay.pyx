"""Anti-replay window for one receiving session: the RFC 6479 bitmap ring of csrc/replay.h.

Rules kept here:
- ``check`` never changes state; ``commit`` is the only writer. The receive path checks a counter before
  decrypting (cheap early drop) and commits it only after the packet authenticated, so a forgery never
  moves the window. ``commit`` says False for a duplicate that slipped past ``check`` (two copies of one
  packet in the same batch), so commit's answer is the one that decides delivery.
- A counter up to ``size_bits`` behind the highest committed one is accepted once; older ones, repeats
  and counters at or past ``REJECT_AFTER_MESSAGES`` are refused.
- Batch forms follow the shared status convention (0 = alive; nonzero slots are skipped and keep their
  code; a refused slot gets ``DROP_REPLAYED``) and run without the GIL.
- One window per session, one thread at a time: it has no lock.
"""

from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memset

REJECT_AFTER_MESSAGES = REPLAY_REJECT_AFTER_MESSAGES
DEFAULT_SIZE_BITS = 8192
MIN_SIZE_BITS = REPLAY_MIN_WINDOW
MAX_SIZE_BITS = REPLAY_MAX_WINDOW
DROP_REPLAYED = TUNNEL_DROP_REPLAYED


cdef class ReplayWindow:
    """Which counters of one session were already accepted (see the module docstring)."""

    def __cinit__(self, size_bits=DEFAULT_SIZE_BITS):
        if not isinstance(size_bits, int) or isinstance(size_bits, bool):
            raise TypeError(f"replay window size must be an int, not {type(size_bits).__name__}")
        if not REPLAY_MIN_WINDOW <= size_bits <= REPLAY_MAX_WINDOW:
            raise ValueError(
                f"replay window of {size_bits} bits is outside {REPLAY_MIN_WINDOW}..{REPLAY_MAX_WINDOW}; "
                f"use a size such as 1024 or 8192"
            )
        cdef size_t words = replay_ring_words(size_bits)
        self.w.ring = <uint64_t *>PyMem_Calloc(words, sizeof(uint64_t))
        if self.w.ring == NULL:
            raise MemoryError()
        self.w.window = size_bits
        self.w.mask = words - 1
        self.w.next = 0

    def __dealloc__(self):
        PyMem_Free(self.w.ring)
        self.w.ring = NULL

    @property
    def size_bits(self):
        """How far behind the highest accepted counter a packet may be and still be accepted."""
        return self.w.window

    @property
    def ring_bits(self):
        """Size of the bitmap ring in bits (memory used: ring_bits / 8 bytes)."""
        return (self.w.mask + 1) * 64

    @property
    def highest(self):
        """Highest committed counter, or -1 before the first commit."""
        return int(self.w.next) - 1

    def reset(self):
        """Forgets every counter (for a fresh key; never for the same key)."""
        memset(self.w.ring, 0, (self.w.mask + 1) * sizeof(uint64_t))
        self.w.next = 0

    cpdef bint check(self, uint64_t counter):
        """True when ``counter`` would be accepted now. Changes nothing."""
        return replay_check(&self.w, counter)

    cpdef bint commit(self, uint64_t counter):
        """Accepts ``counter`` once: True and recorded when fresh and inside the window, else False."""
        return replay_commit(&self.w, counter)

    def check_batch(self, const uint64_t[::1] counters not None, uint8_t[::1] status not None):
        """Marks ``status[i] = DROP_REPLAYED`` where a live slot's counter would be refused.

        Only slots with ``status[i] == 0`` are looked at; returns how many are alive afterwards.
        Duplicates within one batch all pass (nothing is recorded): ``commit_batch`` catches them.
        """
        cdef size_t n = _batch_len(counters.shape[0], status.shape[0])
        cdef size_t alive
        if n == 0:
            return 0
        with nogil:
            alive = replay_check_batch(&self.w, &counters[0], &status[0], n, TUNNEL_DROP_REPLAYED)
        return alive

    def commit_batch(self, const uint64_t[::1] counters not None, uint8_t[::1] status not None):
        """Commits the counter of every live slot in order; a refused one gets ``DROP_REPLAYED``.

        Returns how many slots are alive afterwards (those are the packets to deliver).
        """
        cdef size_t n = _batch_len(counters.shape[0], status.shape[0])
        cdef size_t alive
        if n == 0:
            return 0
        with nogil:
            alive = replay_commit_batch(&self.w, &counters[0], &status[0], n, TUNNEL_DROP_REPLAYED)
        return alive

    def __repr__(self):
        return f"ReplayWindow(size_bits={self.w.window}, highest={self.highest})"


cdef size_t _batch_len(Py_ssize_t ncounters, Py_ssize_t nstatus) except? 0:
    if ncounters != nstatus:
        raise ValueError(f"batch arrays differ in length: {ncounters} counters, {nstatus} status bytes")
    return <size_t>ncounters
