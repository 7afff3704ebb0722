# C view of an AEAD key, for other Cython modules to cimport (the data path worker threads seal and
# open with a key's bytes and its shared send counter without the GIL).
#
# Rules for users: hold the key with ``_acquire()`` (under the GIL) for as long as C code may use
# ``_key`` or ``_next`` and ``_release()`` after (under the GIL); a ``close()`` in between wipes the key
# only at that release. ``_next`` is only ever advanced by aead_seal_batch's atomic reservation.
from libc.stdint cimport uint64_t


cdef class AeadKey:
    cdef unsigned char *_key
    cdef uint64_t _next
    cdef Py_ssize_t _users
    cdef bint _closing
    cdef bint _protect
    cdef void _free(self) noexcept
    cdef const unsigned char *_acquire(self) except NULL
    cdef void _release(self) noexcept
