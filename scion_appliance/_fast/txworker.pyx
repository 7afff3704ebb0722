# distutils: sources = csrc/tx_worker.c csrc/pipeline.c csrc/scion_parse.c csrc/udpio.c csrc/tunio.c csrc/aead_batch.c
"""The TUN -> wire worker thread (csrc/tx_worker.h): Python's handle on it.

Rules kept here:
- The thread is C: it never takes the GIL and never calls Python. Python only arms and disarms lanes,
  takes what the thread hands up (packets for the Python path, per-batch send records for the SendLog)
  and reads counters.
- ``arm`` holds the lane's ``AeadKey`` (``_acquire``) until ``disarm`` (or the worker's end) lets it go,
  so a ``close()`` in between only wipes the key once the thread can no longer use it; still, disarm
  first: a closed session's key must not go on sealing.
- Lane changes take the worker's mutex with the GIL released (the thread holds it for one batch).
- Only one consumer at a time takes from the rings (the trio thread).
"""

import os

cimport cython
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.errno cimport errno
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
from posix.unistd cimport read

from scion_appliance._fast.aead cimport AeadKey
from scion_appliance._fast.codec cimport SCION_OK, scion_parse, scion_rec_t
from scion_appliance._fast.pipeline cimport PrefixTable, pl_prefix
from scion_appliance._fast.udpio cimport udpio_addr


cdef extern from "tx_worker.h" nogil:
    int TXW_REMOTES
    int TXW_MAX_FRAME
    int TXW_HEADROOM
    int TXW_ERRNOS
    int TXW_COUNTER_COUNT
    ctypedef struct txw_remote_counters:
        uint64_t packets, frames, datagrams, bytes, last_tx_ns
    ctypedef struct txw_lane:
        int armed
        const unsigned char *key
        uint64_t *next_counter
        uint32_t receiver
        uint8_t session
        uint32_t stream
        uint64_t seq
        uint32_t path_slot
        uint32_t hdr_len
        scion_rec_t trec
        udpio_addr dest
        uint8_t tmpl[1]
    ctypedef struct txw_send:
        uint32_t remote, path_slot, count, retract
        uint64_t first, bytes, at_ns
    ctypedef struct txw:
        pass
    txw *txw_new(int tun_fd, int vnet, int sock_fd, const pl_prefix *pfx, size_t npfx, unsigned batch,
                 size_t stride, uint32_t frame_size, uint8_t msg_type, unsigned handoff_slots,
                 unsigned send_slots)
    int txw_start(txw *w)
    void txw_stop(txw *w)
    void txw_free(txw *w)
    void txw_lock(txw *w)
    void txw_unlock(txw *w)
    txw_lane *txw_lane_of(txw *w, unsigned r)
    int txw_notify_fd(const txw *w)
    size_t txw_take_handoff(txw *w, uint8_t *dst, uint32_t *lens, size_t max)
    size_t txw_take_sends(txw *w, txw_send *out, size_t max)
    uint64_t txw_counter(const txw *w, unsigned which)
    uint64_t txw_errno_count(const txw *w, unsigned err)
    void txw_remote(const txw *w, unsigned r, txw_remote_counters *out)
    int txw_gso(const txw *w)
    int txw_running(const txw *w)


REMOTES = TXW_REMOTES
HEADROOM = TXW_HEADROOM
# Names of the worker-wide counters, in csrc/tx_worker.h's order; drops carry the shared reason words.
COUNTER_NAMES = (
    "tun_packets_read",
    "handed_off",
    "drop_handoff_full",
    "drop_bad_offload",
    "drop_send_would_block",
    "gso_refused",
    "drop_exhausted",
    "send_records_lost",
    "tun_read_errors",
    "tun_closed",
    "frame_overflow",
    "batches",
    "wakeups",
)


@cython.no_gc_clear
cdef class TxWorker:
    """One TUN -> wire worker thread over ``tun_fd`` (non-blocking; ``vnet_hdr``: virtio-net header
    reads, GSO super-packets split) sending on the UDP socket ``sock_fd``. ``prefixes``: (remote index,
    network) pairs of the traffic policy."""

    cdef txw *w
    cdef list _keys
    cdef uint8_t *_hbuf
    cdef uint32_t *_hlens
    cdef txw_send *_sends
    cdef readonly Py_ssize_t batch, stride, handoff_slots, send_slots
    cdef readonly uint32_t frame_size

    def __cinit__(self, int tun_fd, bint vnet_hdr, int sock_fd, PrefixTable prefixes not None,
                  Py_ssize_t batch=64, Py_ssize_t stride=2048, uint32_t frame_size=1472, uint8_t msg_type=4,
                  Py_ssize_t handoff_slots=1024, Py_ssize_t send_slots=4096):
        if not 0 < batch <= 1024 or not 64 <= stride <= 65600 or not 56 <= frame_size <= TXW_MAX_FRAME:
            raise ValueError(f"batch 1..1024, stride 64..65600, frame size 56..{TXW_MAX_FRAME}")
        if not 0 < handoff_slots <= 65536 or not 0 < send_slots <= 1 << 20:
            raise ValueError("handoff_slots 1..65536, send_slots 1..2^20")
        # The worker keeps its own copy of the table (a reload gives the tunnel a new one).
        self.w = txw_new(tun_fd, vnet_hdr, sock_fd, prefixes.p, prefixes.count, batch, stride, frame_size,
                         msg_type, handoff_slots, send_slots)
        if self.w == NULL:
            raise OSError(errno, f"cannot create the TX worker: {os.strerror(errno)}")
        self._hbuf = <uint8_t *>PyMem_Calloc(handoff_slots, stride)
        self._hlens = <uint32_t *>PyMem_Calloc(handoff_slots, 4)
        self._sends = <txw_send *>PyMem_Calloc(send_slots, sizeof(txw_send))
        if self._hbuf == NULL or self._hlens == NULL or self._sends == NULL:
            raise MemoryError()
        self._keys = [None] * TXW_REMOTES
        self.batch, self.stride, self.frame_size = batch, stride, frame_size
        self.handoff_slots, self.send_slots = handoff_slots, send_slots

    def __dealloc__(self):
        cdef AeadKey key
        if self.w != NULL:
            with nogil:
                txw_free(self.w)  # joins the thread first
            self.w = NULL
        if self._keys is not None:
            for key in self._keys:
                if key is not None:
                    key._release()
            self._keys = None
        PyMem_Free(self._hbuf)
        PyMem_Free(self._hlens)
        PyMem_Free(self._sends)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self):
        """Starts the thread."""
        cdef int rc = txw_start(self.w)
        if rc < 0:
            raise OSError(-rc, f"cannot start the TX worker thread: {os.strerror(-rc)}")

    def stop(self):
        """Stops the thread and waits for it (one batch at most). Lanes stay armed; ``disarm`` them to
        let their keys go. Safe to call twice."""
        with nogil:
            txw_stop(self.w)

    @property
    def running(self):
        return txw_running(self.w) != 0

    @property
    def wake_fd(self):
        """Readable (an eventfd) when handed-up packets wait: ``take_handoff`` them (it clears it)."""
        return txw_notify_fd(self.w)

    @property
    def gso(self):
        """False once the kernel refused UDP GSO (plain sendmmsg from then on)."""
        return txw_gso(self.w) != 0

    # -- lanes -------------------------------------------------------------------------------------------

    def arm(self, Py_ssize_t remote, AeadKey key not None, uint32_t receiver_index, uint8_t session_id,
            uint32_t stream_id, uint64_t seq, header_template, dest, uint32_t path_slot):
        """Sends ``remote``'s packets from now on: SIG frames of (session_id, stream_id) from ``seq``,
        sealed with ``key`` for ``receiver_index``, behind ``header_template`` (a SCION/UDP header with an
        empty payload) to the underlay ``dest`` (a udpio address record); ``path_slot`` tags the send
        records. Re-arming an armed lane of the same stream keeps the lane's own sequence number.
        Returns the sequence number the lane continues from."""
        if not 0 <= remote < TXW_REMOTES:
            raise ValueError(f"remote index {remote} out of range 0..{TXW_REMOTES - 1}")
        cdef bytes tmpl = bytes(header_template)
        cdef bytes d = bytes(dest)
        cdef scion_rec_t rec
        if len(d) != sizeof(udpio_addr):
            raise ValueError(f"dest must be one {sizeof(udpio_addr)}-byte udpio address record")
        if not 0 < len(tmpl) <= TXW_HEADROOM:
            raise ValueError(f"the header template must be 1..{TXW_HEADROOM} bytes")
        if scion_parse(<const uint8_t *><const char *>tmpl, len(tmpl), &rec) != SCION_OK:
            raise ValueError("the header template does not parse as SCION")
        if rec.l4_proto != 17 or rec.l4_off + 8 != len(tmpl):
            raise ValueError("the header template must be SCION/UDP with an empty payload")
        cdef const unsigned char *kp = key._acquire()  # raises KeyClosedError for a closed key
        cdef txw_lane *lane
        cdef uint64_t next_seq
        cdef uint32_t hlen = <uint32_t>len(tmpl)
        cdef const char *tp = tmpl
        cdef const char *dp = d
        with nogil:
            txw_lock(self.w)
            lane = txw_lane_of(self.w, <unsigned>remote)
            if not (lane.armed and lane.session == session_id and lane.stream == stream_id):
                lane.seq = seq
            lane.key = kp
            lane.next_counter = &key._next
            lane.receiver = receiver_index
            lane.session = session_id
            lane.stream = stream_id
            lane.path_slot = path_slot
            lane.hdr_len = hlen
            lane.trec = rec
            memcpy(&lane.dest, dp, sizeof(udpio_addr))
            memcpy(lane.tmpl, tp, hlen)
            lane.armed = 1
            next_seq = lane.seq
            txw_unlock(self.w)
        cdef AeadKey old = self._keys[remote]
        self._keys[remote] = key
        if old is not None:
            old._release()
        return next_seq

    def disarm(self, Py_ssize_t remote):
        """Stops sending ``remote``'s packets in C (they are handed up from the next batch on). Returns
        the stream's next sequence number for the Python encoder, or None when the lane was not armed.
        Once this returns, the thread no longer uses the lane's key."""
        if not 0 <= remote < TXW_REMOTES:
            raise ValueError(f"remote index {remote} out of range 0..{TXW_REMOTES - 1}")
        cdef txw_lane *lane
        cdef uint64_t seq = 0
        cdef int was = 0
        with nogil:
            txw_lock(self.w)
            lane = txw_lane_of(self.w, <unsigned>remote)
            was = lane.armed
            seq = lane.seq
            lane.armed = 0
            lane.key = NULL
            lane.next_counter = NULL
            txw_unlock(self.w)
        cdef AeadKey old = self._keys[remote]
        self._keys[remote] = None
        if old is not None:
            old._release()
        return seq if was else None

    def armed(self, Py_ssize_t remote):
        """The key ``remote``'s lane seals with, or None when it is not armed."""
        if not 0 <= remote < TXW_REMOTES:
            raise ValueError(f"remote index {remote} out of range 0..{TXW_REMOTES - 1}")
        return self._keys[remote]

    # -- what the thread hands up --------------------------------------------------------------------------

    def take_handoff(self):
        """The packets handed up since the last call, in read order: (read length, packet bytes); a read
        length above ``stride`` marks a packet longer than the read slot (its first ``stride`` bytes)."""
        cdef uint64_t junk
        cdef size_t n
        cdef ssize_t got
        cdef int fd = txw_notify_fd(self.w)
        with nogil:
            got = read(fd, &junk, 8)  # clear first: anything handed up after this wakes us again
            n = txw_take_handoff(self.w, self._hbuf, self._hlens, self.handoff_slots)
        cdef Py_ssize_t i, s = self.stride
        return [(self._hlens[i], (<char *>self._hbuf)[i * s: i * s + min(<Py_ssize_t>self._hlens[i], s)])
                for i in range(n)]

    def take_sends(self):
        """Per batch and remote, since the last call: (remote, path_slot, first counter, count, payload
        bytes, monotonic time, retract). A record is made before its datagrams are sent (an ack may come
        back at once); ``retract`` True follows when its last ``count`` datagrams could not be sent."""
        cdef size_t n
        with nogil:
            n = txw_take_sends(self.w, self._sends, self.send_slots)
        return [(self._sends[i].remote, self._sends[i].path_slot, self._sends[i].first, self._sends[i].count,
                 self._sends[i].bytes, self._sends[i].at_ns / 1e9, self._sends[i].retract != 0)
                for i in range(n)]

    # -- counters ----------------------------------------------------------------------------------------

    def counters(self):
        """The worker-wide counters (cumulative): ``COUNTER_NAMES`` plus ``drop_send_errno_<n>``."""
        out = {name: txw_counter(self.w, i) for i, name in enumerate(COUNTER_NAMES)}
        cdef unsigned e
        cdef uint64_t c
        for e in range(TXW_ERRNOS + 1):
            c = txw_errno_count(self.w, e)
            if c:
                out[f"drop_send_errno_{e}" if e < TXW_ERRNOS else "drop_send_errno_other"] = c
        return out

    def remote_counters(self, Py_ssize_t remote):
        """Cumulative per remote: packets, frames, datagrams, bytes (SIG frame bytes sealed and sent),
        last_tx (monotonic seconds of the last send; 0.0 never)."""
        if not 0 <= remote < TXW_REMOTES:
            raise ValueError(f"remote index {remote} out of range 0..{TXW_REMOTES - 1}")
        cdef txw_remote_counters c
        txw_remote(self.w, <unsigned>remote, &c)
        return {"packets": c.packets, "frames": c.frames, "datagrams": c.datagrams, "bytes": c.bytes,
                "last_tx": c.last_tx_ns / 1e9}

