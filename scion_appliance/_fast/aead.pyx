# distutils: sources = csrc/aead_batch.c
"""Sealed envelopes: ChaCha20-Poly1305 (IETF, libsodium) for whole batches and for single packets.

Rules kept here:
- The envelope and the batch layout are those of csrc/aead_batch.h: type | reserved | receiver index (LE)
  | counter (LE) | ciphertext | tag; nonce = 4 zero bytes + counter; the 16-byte header is the AD.
- One ``AeadKey`` is one direction of one session. Its 32 bytes live in libsodium guarded memory
  (``sodium_malloc``: guard pages, canary, locked), optionally ``mprotect``-ed to no access while idle;
  ``close()`` zeroes and frees them, after which every use raises ``KeyClosedError``.
- A sending key owns its counter: ``seal_batch`` and ``seal`` take consecutive counters from it and never
  one at or past ``REJECT_AFTER_MESSAGES``, so no (key, nonce) pair can repeat through this API. The run
  a call takes is reserved atomically, so a C worker thread (``_fast.txworker``) may seal with the same
  key at the same time (aead.pxd: it holds the key with ``_acquire``/``_release``).
- Batch calls release the GIL and never call back into Python per packet. Per-packet status follows the
  shared convention (0 = alive; nonzero slots are skipped; a failing slot gets a ``DROP_*`` code and the
  batch goes on). ``DROP_REASONS[code]`` is the name used by counters and log lines.
- The receive path is check, open, commit: ``open_batch(window=...)`` does all three per packet; without a
  window the caller runs ``ReplayWindow.check_batch`` (on ``read_headers`` counters) and ``commit_batch``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from scion_appliance._fast.replay cimport (
    REPLAY_REJECT_AFTER_MESSAGES,
    TUNNEL_DROP_COUNT,
    TUNNEL_DROP_EXHAUSTED,
    TUNNEL_DROP_FORGED,
    TUNNEL_DROP_MALFORMED,
    TUNNEL_DROP_RECEIVER,
    TUNNEL_DROP_REPLAYED,
    TUNNEL_DROP_TYPE,
    ReplayWindow,
    replay_window,
    tunnel_drop_names,
)


cdef extern from "sodium.h" nogil:
    int sodium_init()
    void *sodium_malloc(size_t size)
    void sodium_free(void *ptr)
    void sodium_memzero(void *pnt, size_t len)
    int sodium_mprotect_noaccess(void *ptr)
    int sodium_mprotect_readonly(void *ptr)
    int sodium_mprotect_readwrite(void *ptr)
    int crypto_aead_chacha20poly1305_ietf_encrypt(
        unsigned char *c, unsigned long long *clen_p, const unsigned char *m, unsigned long long mlen,
        const unsigned char *ad, unsigned long long adlen, const unsigned char *nsec,
        const unsigned char *npub, const unsigned char *k)
    int crypto_aead_chacha20poly1305_ietf_decrypt(
        unsigned char *m, unsigned long long *mlen_p, unsigned char *nsec, const unsigned char *c,
        unsigned long long clen, const unsigned char *ad, unsigned long long adlen,
        const unsigned char *npub, const unsigned char *k)


cdef extern from "aead_batch.h" nogil:
    int AEAD_KEY_LEN
    int AEAD_HEADER_LEN
    int AEAD_TAG_LEN
    int AEAD_OVERHEAD
    int AEAD_NONCE_LEN
    int AEAD_TYPE_DATA
    uint64_t aead_counter_load(const uint64_t *counter)
    size_t aead_seal_batch(const unsigned char *key, unsigned char *buf, size_t stride, size_t n,
                           uint32_t *lengths, const uint32_t *offsets, uint32_t off, uint8_t *status,
                           uint64_t *counters_out, uint8_t type, uint32_t receiver, uint64_t *next_counter)
    size_t aead_read_headers(const unsigned char *buf, size_t stride, size_t n, const uint32_t *lengths,
                             const uint32_t *offsets, uint32_t off, uint8_t *status, uint64_t *counters,
                             uint32_t *receivers, uint8_t type)
    size_t aead_open_batch(const unsigned char *key, unsigned char *buf, size_t stride, size_t n,
                           uint32_t *lengths, const uint32_t *offsets, uint32_t off, uint8_t *status,
                           uint64_t *counters_out, uint8_t type, int64_t receiver, replay_window *window)


if sodium_init() < 0:
    raise ImportError("libsodium failed to initialise (sodium_init); the AEAD module cannot run")

KEY_LEN = AEAD_KEY_LEN
HEADER_LEN = AEAD_HEADER_LEN
TAG_LEN = AEAD_TAG_LEN
OVERHEAD = AEAD_OVERHEAD
NONCE_LEN = AEAD_NONCE_LEN
TYPE_DATA = AEAD_TYPE_DATA
REJECT_AFTER_MESSAGES = REPLAY_REJECT_AFTER_MESSAGES

DROP_MALFORMED = TUNNEL_DROP_MALFORMED
DROP_TYPE = TUNNEL_DROP_TYPE
DROP_RECEIVER = TUNNEL_DROP_RECEIVER
DROP_REPLAYED = TUNNEL_DROP_REPLAYED
DROP_FORGED = TUNNEL_DROP_FORGED
DROP_EXHAUSTED = TUNNEL_DROP_EXHAUSTED
DROP_REASONS = tuple(tunnel_drop_names[i].decode() for i in range(<int>TUNNEL_DROP_COUNT))


class KeyClosedError(RuntimeError):
    """The key was closed (wiped); the session it belonged to is over."""


class EnvelopeError(ValueError):
    """A single envelope could not be sealed or opened; ``reason`` is its ``DROP_*`` code."""

    def __init__(self, reason, detail=""):
        self.reason = reason
        self.reason_name = DROP_REASONS[reason]
        super().__init__(f"envelope dropped: {self.reason_name}" + (f" ({detail})" if detail else ""))


def parse_header(data):
    """Returns (type, receiver index, counter) of an envelope's 16-byte header (unauthenticated)."""
    cdef const unsigned char[::1] b = data
    if b.shape[0] < AEAD_HEADER_LEN:
        raise EnvelopeError(TUNNEL_DROP_MALFORMED, f"{b.shape[0]} bytes, a header needs {AEAD_HEADER_LEN}")
    return (
        b[0],
        int.from_bytes(bytes(b[4:8]), "little"),
        int.from_bytes(bytes(b[8:16]), "little"),
    )


cdef size_t _check_batch(Py_ssize_t buflen, Py_ssize_t stride, Py_ssize_t n, Py_ssize_t nstatus,
                         object counters, object offsets) except? 0:
    if stride <= 0:
        raise ValueError(f"stride must be positive, not {stride}")
    if nstatus < n:
        raise ValueError(f"status has {nstatus} entries for {n} slots")
    if counters is not None and len(counters) < n:
        raise ValueError(f"counters has {len(counters)} entries for {n} slots")
    if offsets is not None and len(offsets) < n:
        raise ValueError(f"offsets has {len(offsets)} entries for {n} slots")
    if n and buflen // stride < n:
        raise ValueError(f"buffer of {buflen} bytes holds {buflen // stride} slots of {stride}, not {n}")
    return <size_t>n


def read_headers(const unsigned char[::1] buf not None, Py_ssize_t stride, const uint32_t[::1] lengths not None,
                 uint8_t[::1] status not None, uint64_t[::1] counters not None, uint32_t[::1] receivers=None,
                 *, uint32_t off=0, const uint32_t[::1] offsets=None, uint8_t msg_type=AEAD_TYPE_DATA):
    """Reads counter (and receiver index) of every live slot without opening it.

    Slots too short for an envelope get ``DROP_MALFORMED``, other types ``DROP_TYPE``. Returns how many
    slots are alive. Nothing here is authenticated yet: use it to pick the session and to replay-check.
    """
    cdef size_t n = _check_batch(buf.shape[0], stride, lengths.shape[0], status.shape[0], counters, offsets)
    cdef size_t alive
    if receivers is not None and receivers.shape[0] < <Py_ssize_t>n:
        raise ValueError(f"receivers has {receivers.shape[0]} entries for {n} slots")
    if n == 0:
        return 0
    cdef const uint32_t *offs = &offsets[0] if offsets is not None else NULL
    cdef uint32_t *recv = &receivers[0] if receivers is not None else NULL
    with nogil:
        alive = aead_read_headers(&buf[0], stride, n, &lengths[0], offs, off, &status[0], &counters[0],
                                  recv, msg_type)
    return alive


cdef class AeadKey:
    """One direction of one session: a ChaCha20-Poly1305 key in guarded memory and its send counter."""

    # Fields and C methods are declared in aead.pxd (the worker threads cimport them).

    def __cinit__(self, key, uint64_t send_counter=0, bint protect_idle=False):
        cdef const unsigned char[::1] k = key
        if k.shape[0] != AEAD_KEY_LEN:
            raise ValueError(f"an AEAD key is {AEAD_KEY_LEN} bytes, not {k.shape[0]}")
        self._key = <unsigned char *>sodium_malloc(AEAD_KEY_LEN)
        if self._key == NULL:
            raise MemoryError("sodium_malloc failed for an AEAD key (locked-memory limit? see ulimit -l)")
        memcpy(self._key, &k[0], AEAD_KEY_LEN)
        self._next = send_counter
        self._protect = protect_idle
        if protect_idle:
            sodium_mprotect_noaccess(self._key)

    def __dealloc__(self):
        self._free()

    cdef void _free(self) noexcept:
        if self._key != NULL:
            if self._protect:
                sodium_mprotect_readwrite(self._key)
            sodium_memzero(self._key, AEAD_KEY_LEN)
            sodium_free(self._key)
            self._key = NULL

    cdef const unsigned char *_acquire(self) except NULL:
        if self._key == NULL or self._closing:
            raise KeyClosedError("this AEAD key was closed and wiped; its session is over, use the new one")
        if self._users == 0 and self._protect:
            sodium_mprotect_readonly(self._key)
        self._users += 1
        return self._key

    cdef void _release(self) noexcept:
        self._users -= 1
        if self._users == 0:
            if self._closing:
                self._free()
            elif self._protect:
                sodium_mprotect_noaccess(self._key)

    def close(self):
        """Zeroes and frees the key (at once, or when a batch running in another thread ends)."""
        self._closing = True
        if self._users == 0:
            self._free()

    wipe = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def closed(self):
        return self._closing or self._key == NULL

    @property
    def send_counter(self):
        """The counter the next sealed packet will carry (another thread may be sealing meanwhile)."""
        return aead_counter_load(&self._next)

    def seal_batch(self, unsigned char[::1] buf not None, Py_ssize_t stride, uint32_t[::1] lengths not None,
                   uint8_t[::1] status not None, uint32_t receiver, *, uint32_t off=0,
                   const uint32_t[::1] offsets=None, uint64_t[::1] counters=None,
                   uint8_t msg_type=AEAD_TYPE_DATA):
        """Seals every live slot in place; returns how many were sealed.

        In: plaintext of ``lengths[i]`` bytes at slot offset ``o + 16`` (``o`` = ``offsets[i]`` or ``off``).
        Out: header + ciphertext + tag from ``o``; ``lengths[i] = o + 32 + plaintext`` (the datagram length
        from the slot's start); ``counters[i]`` the counter used. A plaintext that does not fit its slot
        gets ``DROP_MALFORMED``; once the counter reaches the limit, ``DROP_EXHAUSTED`` (rekey).
        """
        cdef size_t n = _check_batch(buf.shape[0], stride, lengths.shape[0], status.shape[0], counters, offsets)
        cdef size_t sealed
        if n == 0:
            return 0
        cdef const uint32_t *offs = &offsets[0] if offsets is not None else NULL
        cdef uint64_t *ctrs = &counters[0] if counters is not None else NULL
        cdef const unsigned char *key = self._acquire()
        try:
            with nogil:
                sealed = aead_seal_batch(key, &buf[0], stride, n, &lengths[0], offs, off, &status[0], ctrs,
                                         msg_type, receiver, &self._next)
        finally:
            self._release()
        return sealed

    def open_batch(self, unsigned char[::1] buf not None, Py_ssize_t stride, uint32_t[::1] lengths not None,
                   uint8_t[::1] status not None, uint64_t[::1] counters not None, *, uint32_t off=0,
                   const uint32_t[::1] offsets=None, int64_t receiver=-1, ReplayWindow window=None,
                   uint8_t msg_type=AEAD_TYPE_DATA):
        """Opens every live slot in place; returns how many are alive afterwards.

        In: ``lengths[i]`` = datagram length from the slot's start, envelope at ``o``. Out: plaintext at
        ``o + 16``, ``lengths[i]`` = plaintext length (0 for a dropped slot), ``counters[i]`` = the
        packet's counter. ``receiver`` >= 0 drops other receiver indices. With ``window``, each counter is
        checked before decryption and committed after authentication (``DROP_REPLAYED``).
        """
        cdef size_t n = _check_batch(buf.shape[0], stride, lengths.shape[0], status.shape[0], counters, offsets)
        cdef size_t alive
        if n == 0:
            return 0
        cdef const uint32_t *offs = &offsets[0] if offsets is not None else NULL
        cdef replay_window *w = &window.w if window is not None else NULL
        cdef const unsigned char *key = self._acquire()
        try:
            with nogil:
                alive = aead_open_batch(key, &buf[0], stride, n, &lengths[0], offs, off, &status[0],
                                        &counters[0], msg_type, receiver, w)
        finally:
            self._release()
        return alive

    def seal(self, uint32_t receiver, const unsigned char[::1] plaintext not None, *,
             uint8_t msg_type=AEAD_TYPE_DATA):
        """Seals one packet with the next counter; returns the envelope (header + ciphertext + tag)."""
        cdef Py_ssize_t plen = plaintext.shape[0]
        cdef bytes out = PyBytes_FromStringAndSize(NULL, plen + AEAD_OVERHEAD)
        cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
        cdef uint32_t length = <uint32_t>plen
        cdef uint8_t status = 0
        if plen > 0xFFFF:
            raise ValueError(f"a {plen}-byte plaintext is larger than any datagram")
        if plen:
            memcpy(p + AEAD_HEADER_LEN, &plaintext[0], plen)
        cdef const unsigned char *key = self._acquire()
        try:
            aead_seal_batch(key, p, plen + AEAD_OVERHEAD, 1, &length, NULL, 0, &status, NULL, msg_type,
                            receiver, &self._next)
        finally:
            self._release()
        if status:
            raise EnvelopeError(status, "the session must rekey" if status == TUNNEL_DROP_EXHAUSTED else "")
        return out

    def open(self, const unsigned char[::1] envelope not None, *, int64_t receiver=-1,
             ReplayWindow window=None, uint8_t msg_type=AEAD_TYPE_DATA):
        """Opens one envelope (left unchanged); returns (counter, plaintext) or raises EnvelopeError."""
        cdef Py_ssize_t elen = envelope.shape[0]
        cdef uint32_t length = <uint32_t>elen
        cdef uint8_t status = 0
        cdef uint64_t counter = 0
        if elen < AEAD_OVERHEAD or elen > 0xFFFF:
            raise EnvelopeError(TUNNEL_DROP_MALFORMED, f"{elen} bytes")
        cdef bytearray work = bytearray(envelope)
        cdef unsigned char *p = <unsigned char *>(<char *>work)
        cdef replay_window *w = &window.w if window is not None else NULL
        cdef const unsigned char *key = self._acquire()
        try:
            aead_open_batch(key, p, elen, 1, &length, NULL, 0, &status, &counter, msg_type, receiver, w)
        finally:
            self._release()
        if status:
            raise EnvelopeError(status)
        return counter, bytes(work[AEAD_HEADER_LEN:AEAD_HEADER_LEN + length])

    def seal_raw(self, const unsigned char[::1] nonce not None, const unsigned char[::1] ad not None,
                 const unsigned char[::1] plaintext not None):
        """The bare IETF AEAD: ciphertext + tag under an explicit 12-byte nonce.

        For the control plane's own constructions and known-answer tests. The caller owns nonce
        uniqueness: never use it with a key that also seals envelopes.
        """
        if nonce.shape[0] != AEAD_NONCE_LEN:
            raise ValueError(f"the nonce is {AEAD_NONCE_LEN} bytes, not {nonce.shape[0]}")
        cdef Py_ssize_t plen = plaintext.shape[0]
        cdef bytes out = PyBytes_FromStringAndSize(NULL, plen + AEAD_TAG_LEN)
        cdef const unsigned char *key = self._acquire()
        try:
            crypto_aead_chacha20poly1305_ietf_encrypt(
                <unsigned char *>PyBytes_AS_STRING(out), NULL, _ptr(plaintext), plen, _ptr(ad), ad.shape[0],
                NULL, &nonce[0], key)
        finally:
            self._release()
        return out

    def open_raw(self, const unsigned char[::1] nonce not None, const unsigned char[::1] ad not None,
                 const unsigned char[::1] ciphertext not None):
        """Inverse of ``seal_raw``; raises EnvelopeError(DROP_FORGED) when the tag does not verify."""
        if nonce.shape[0] != AEAD_NONCE_LEN:
            raise ValueError(f"the nonce is {AEAD_NONCE_LEN} bytes, not {nonce.shape[0]}")
        cdef Py_ssize_t clen = ciphertext.shape[0]
        if clen < AEAD_TAG_LEN:
            raise EnvelopeError(TUNNEL_DROP_MALFORMED, f"{clen} bytes, shorter than a tag")
        cdef bytes out = PyBytes_FromStringAndSize(NULL, clen - AEAD_TAG_LEN)
        cdef int rc
        cdef const unsigned char *key = self._acquire()
        try:
            rc = crypto_aead_chacha20poly1305_ietf_decrypt(
                <unsigned char *>PyBytes_AS_STRING(out), NULL, NULL, &ciphertext[0], clen, _ptr(ad),
                ad.shape[0], &nonce[0], key)
        finally:
            self._release()
        if rc != 0:
            raise EnvelopeError(TUNNEL_DROP_FORGED)
        return out

    def __repr__(self):
        state = "closed" if self.closed else f"send_counter={self._next}"
        return f"<AeadKey {state}>"


cdef inline const unsigned char *_ptr(const unsigned char[::1] b) noexcept:
    # libsodium accepts any pointer with length 0; an empty view has no element 0 to take the address of.
    return &b[0] if b.shape[0] else <const unsigned char *>""
