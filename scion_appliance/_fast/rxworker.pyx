# distutils: sources = csrc/rx_worker.c csrc/pipeline.c csrc/scion_parse.c csrc/udpio.c csrc/tunio.c csrc/aead_batch.c
"""The receive direction of the data path (wire -> TUN) in a C thread with the GIL released.

``RxWorker`` owns one pthread (csrc/rx_worker.c) that polls the underlay socket, receives, parses, opens
the data envelopes of armed sessions, deframes and writes to the TUN device; in steady state no Python
runs per batch. Python (the gateway's trio task) only coordinates:

- ``arm(receiver, key, window, deframer, remote, expires_at)`` gives a session's receive key, replay
  window and its remote's deframer to the thread; ``disarm(receiver)`` takes them back. After
  ``disarm`` returns the thread no longer touches them: only then may the key be closed. An armed key is
  held (``AeadKey._acquire``) so even a ``close()`` while armed wipes it only at the disarm.
- ``locked()``: the worker's lock, for Python-side opens of an armed session (its window is shared) and
  for Python-side use of a deframer the thread may use.
- ``wake_fd`` becomes readable when records were handed up; ``take_handoff()`` returns them:
  ``(kind, receiver, remote, counter, received, addr, data)`` with kind ``DATAGRAM`` (a datagram for the
  Python path), ``ACK`` (an ack is due: counter, running received count and the datagram it answers,
  payload zeroed) or ``FRAME`` (an opened SIG frame the C deframer left to the Python decoder).
- ``counters()``: what happened since the last call, per lane and for the worker.
"""

import os

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from scion_appliance._fast.aead cimport AeadKey
from scion_appliance._fast.pipeline cimport Deframer, PrefixTable, pl_carry, pl_prefix
from scion_appliance._fast.replay cimport ReplayWindow, TUNNEL_DROP_COUNT, replay_window, tunnel_drop_names
from scion_appliance._fast.udpio cimport udpio_addr


cdef extern from "scion_parse.h" nogil:
    int SCION_REASON_COUNT
    const char *scion_reason_names[]


cdef extern from "rx_worker.h" nogil:
    int RXW_MAX_LANES
    int RXW_HANDOFF_SLOTS
    int RXW_H_DATAGRAM
    int RXW_H_ACK
    int RXW_H_FRAME
    ctypedef struct rxw_record:
        uint8_t kind
        uint8_t remote
        uint32_t receiver
        uint32_t len
        uint32_t received
        uint64_t counter
        udpio_addr addr
    ctypedef struct rxw_lane_counters:
        uint64_t rx_packets
        uint64_t rx_bytes
        uint64_t data
        uint64_t keepalives
        uint64_t frames_fast
        uint64_t written
        uint64_t tun_failed
        uint64_t spoofed
        uint64_t drops[7]
        int64_t last_rx_ns
        int tun_errno
    ctypedef struct rxw_counters:
        uint64_t batches
        uint64_t datagrams
        uint64_t handed_up
        uint64_t handoff_full
        uint64_t recv_errors
        uint64_t parse[32]
    ctypedef struct rx_worker:
        int up_fd
        int started
        int failed_errno
    rx_worker *rxw_new(int sock_fd, int gro, int tun_fd, int vnet, uint32_t udp_segs, uint16_t port,
                       uint8_t data_type, const pl_prefix *pfx, size_t npfx, size_t batch, size_t stride,
                       int64_t ack_interval_ns)
    void rxw_free(rx_worker *w)
    int rxw_start(rx_worker *w)
    void rxw_stop(rx_worker *w)
    void rxw_lock(rx_worker *w)
    void rxw_unlock(rx_worker *w)
    int rxw_arm(rx_worker *w, uint32_t receiver, const unsigned char *key, replay_window *window,
                uint8_t remote, pl_carry *carry, uint8_t *arena, size_t arena_size, int64_t expires_ns)
    int rxw_disarm(rx_worker *w, uint32_t receiver, rxw_lane_counters *out)
    void rxw_stream_idle(rx_worker *w, uint8_t remote, uint32_t seen)
    int rxw_harvest_lane(rx_worker *w, size_t k, uint32_t *receiver, rxw_lane_counters *out)
    void rxw_harvest(rx_worker *w, rxw_counters *out)
    const rxw_record *rxw_handoff_peek(rx_worker *w, const uint8_t **data)
    void rxw_handoff_pop(rx_worker *w)
    int64_t rxw_now_ns()


DATAGRAM = RXW_H_DATAGRAM
ACK = RXW_H_ACK
FRAME = RXW_H_FRAME
MAX_LANES = RXW_MAX_LANES
HANDOFF_SLOTS = RXW_HANDOFF_SLOTS
DATA_TYPE = 4  # messages.MessageType.DATA


cdef inline int64_t _ns(double seconds) noexcept nogil:
    if seconds >= 9.2e9:
        return <int64_t>0x7FFFFFFFFFFFFFFF
    return <int64_t>(seconds * 1e9)


cdef dict _lane_dict(rxw_lane_counters *c):
    d = {
        "rx_packets": c.rx_packets,
        "rx_bytes": c.rx_bytes,
        "data": c.data,
        "keepalives": c.keepalives,
        "frames_fast": c.frames_fast,
        "written": c.written,
        "tun_failed": c.tun_failed,
        "spoofed": c.spoofed,
        "last_rx": c.last_rx_ns / 1e9 if c.last_rx_ns else None,
        "tun_errno": c.tun_errno,
    }
    cdef int k
    for k in range(1, <int>TUNNEL_DROP_COUNT):
        if c.drops[k]:
            d["drop_" + tunnel_drop_names[k].decode()] = c.drops[k]
    return d


cdef class _Held:
    """``with worker.locked():`` holds the worker's lock (the thread waits between batches)."""

    cdef RxWorker owner

    def __enter__(self):
        cdef rx_worker *w = self.owner.w
        with nogil:
            rxw_lock(w)
        return self

    def __exit__(self, *exc):
        rxw_unlock(self.owner.w)
        return False


cdef class RxWorker:
    """One receive thread over a UDP socket and a TUN fd (see the module docstring)."""

    cdef rx_worker *w
    cdef dict _lanes     # receiver -> (AeadKey, ReplayWindow, Deframer): kept alive while armed
    cdef dict _deframers  # remote -> Deframer the thread may still point at
    cdef readonly int port
    cdef readonly bint stopped

    def __cinit__(self, int sock_fd, bint gro, int tun_fd, bint vnet_hdr, unsigned int udp_write_segs,
                  int port, PrefixTable prefixes not None, Py_ssize_t batch=64, Py_ssize_t stride=2048,
                  double ack_interval=0.01, int msg_type=DATA_TYPE):
        if not 1 <= udp_write_segs <= 64:
            raise ValueError("udp_write_segs: 1 to 64 datagrams per coalesced TUN write")
        if batch <= 0 or stride < 64:
            raise ValueError("batch must be positive and stride at least 64")
        self.w = rxw_new(sock_fd, gro, tun_fd, vnet_hdr, udp_write_segs, <uint16_t>port, <uint8_t>msg_type,
                         prefixes.p, prefixes.count, batch, stride, _ns(ack_interval))
        if self.w == NULL:
            raise MemoryError("the receive worker could not be set up: out of memory or file descriptors "
                              "(eventfd)")
        self._lanes = {}
        self._deframers = {}
        self.port = port

    def __dealloc__(self):
        if self.w != NULL:
            with nogil:
                rxw_stop(self.w)
            self._release_all()
            rxw_free(self.w)
            self.w = NULL

    cdef void _release_all(self):
        if self._lanes is None:
            return
        for key, _, _ in self._lanes.values():
            (<AeadKey>key)._release()
        self._lanes.clear()

    # -- the thread ------------------------------------------------------------------------------------

    def start(self):
        if self.stopped:
            raise RuntimeError("a stopped receive worker cannot start again; make a new one")
        cdef int rc = rxw_start(self.w)
        if rc < 0:
            raise OSError(-rc, f"cannot start the receive worker thread: {os.strerror(-rc)}")

    def stop(self):
        """Stops the thread and joins it (the GIL released), then disarms every lane. Returns the last
        ``counters()`` (nothing counted is lost). Idempotent."""
        if self.w == NULL:
            return {"worker": {}, "lanes": {}}
        with nogil:
            rxw_stop(self.w)
        last = self.counters()
        for receiver in list(self._lanes):
            self.disarm(receiver)
        self.stopped = True
        return last

    @property
    def running(self):
        """The thread runs (started, not stopped, and it has not ended on a socket failure)."""
        return self.w.started != 0 and self.w.failed_errno == 0 and not self.stopped

    @property
    def failed_errno(self):
        """The errno that ended the thread on its own (0: none)."""
        return self.w.failed_errno

    @property
    def wake_fd(self):
        """An eventfd, readable when records were handed up (or the thread ended)."""
        return self.w.up_fd

    def locked(self):
        """A context manager holding the worker's lock: the thread waits between batches meanwhile."""
        cdef _Held h = _Held.__new__(_Held)
        h.owner = self
        return h

    # -- lanes -----------------------------------------------------------------------------------------

    def arm(self, uint32_t receiver, AeadKey key not None, ReplayWindow window not None,
            Deframer deframer not None, int remote, double expires_at=float("inf")):
        """From now on the thread opens the data envelopes for ``receiver`` with ``key`` and ``window``,
        deframes them with ``deframer`` (remote index ``remote`` of the prefix table) and writes the
        packets. ``expires_at`` (time.monotonic seconds): afterwards its datagrams go up instead."""
        if self.stopped:
            raise RuntimeError("the receive worker is stopped")
        if receiver in self._lanes:
            raise ValueError(f"receiver {receiver:#x} is armed already")
        if not 0 <= remote < 255:
            raise ValueError(f"remote index {remote} out of range 0..254")
        cdef const unsigned char *k = key._acquire()
        cdef int rc
        with nogil:
            rc = rxw_arm(self.w, receiver, k, &window.w, <uint8_t>remote, deframer.carry, deframer.arena,
                         deframer.arena_size, _ns(expires_at))
        if rc < 0:
            key._release()
            if rc == -28:  # ENOSPC
                raise OverflowError(f"all {RXW_MAX_LANES} receive lanes are armed")
            raise OSError(-rc, os.strerror(-rc))
        self._lanes[receiver] = (key, window, deframer)
        self._deframers[remote] = deframer

    def disarm(self, uint32_t receiver):
        """Takes the lane back; returns its counters since the last harvest (None: it was not armed).
        The key may be closed once this returns."""
        entry = self._lanes.pop(receiver, None)
        if entry is None:
            return None
        cdef rxw_lane_counters c
        cdef int rc
        with nogil:
            rc = rxw_disarm(self.w, receiver, &c)
        (<AeadKey>entry[0])._release()
        return _lane_dict(&c) if rc == 0 else None

    def armed(self, uint32_t receiver):
        return receiver in self._lanes

    def receivers(self):
        return list(self._lanes)

    def stream_idle(self, int remote, uint32_t seen):
        """The Python decoder of ``remote`` holds no partial packet after the FRAME record ``seen`` (that
        record's ``received`` field): the thread deframes the remote's frames again, unless it handed up
        more since (after it handed one up, every frame of that remote goes up until this is called with
        the number of the last one)."""
        if 0 <= remote < 255:
            with nogil:
                rxw_stream_idle(self.w, <uint8_t>remote, seen)

    # -- handoff and counters ----------------------------------------------------------------------------

    def take_handoff(self, Py_ssize_t limit=HANDOFF_SLOTS):
        """The records handed up since the last call, oldest first (at most ``limit``)."""
        cdef const rxw_record *r
        cdef const uint8_t *data
        os_read = os.read
        try:
            os_read(self.w.up_fd, 8)
        except BlockingIOError:
            pass
        out = []
        while len(out) < limit:
            r = rxw_handoff_peek(self.w, &data)
            if r == NULL:
                break
            out.append((r.kind, r.receiver, r.remote, r.counter, r.received,
                        PyBytes_FromStringAndSize(<const char *>&r.addr, sizeof(udpio_addr)),
                        PyBytes_FromStringAndSize(<const char *>data, r.len)))
            rxw_handoff_pop(self.w)
        return out

    def counters(self):
        """What happened since the last call: ``{"worker": {...}, "lanes": {receiver: {...}}}``. Lane
        entries: rx_packets, rx_bytes, data, keepalives, frames_fast, written, tun_failed, tun_errno,
        spoofed, last_rx (time.monotonic seconds, or None), drop_<tunnel reason>; worker: batches,
        datagrams, handed_up, handoff_full, recv_errors, drop_<SCION parse reason>."""
        cdef rxw_counters wc
        cdef rxw_lane_counters lc[64]
        cdef uint32_t receiver[64]
        cdef int armed[64]
        cdef size_t k, nl = min(<size_t>RXW_MAX_LANES, 64)
        with nogil:  # the thread may hold the lock for a batch: wait without the GIL
            for k in range(nl):
                armed[k] = rxw_harvest_lane(self.w, k, &receiver[k], &lc[k])
            rxw_harvest(self.w, &wc)
        lanes = {}
        for k in range(nl):
            if armed[k]:
                lanes[receiver[k]] = _lane_dict(&lc[k])
        worker = {
            "batches": wc.batches,
            "datagrams": wc.datagrams,
            "handed_up": wc.handed_up,
            "handoff_full": wc.handoff_full,
            "recv_errors": wc.recv_errors,
        }
        cdef int i
        for i in range(1, SCION_REASON_COUNT):
            if wc.parse[i]:
                worker["drop_" + scion_reason_names[i].decode()] = wc.parse[i]
        return {"worker": worker, "lanes": lanes}


def now():
    """CLOCK_MONOTONIC in seconds, as the thread reads it (time.monotonic on Linux)."""
    return rxw_now_ns() / 1e9
