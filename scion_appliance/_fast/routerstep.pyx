# distutils: sources = csrc/aes_cmac.c csrc/router_step.c csrc/scion_parse.c
# distutils: libraries = crypto
"""Border-router path processing over one packet or a whole batch (C in csrc/router_step.c).

Rules kept here:
- ``RouterStep`` holds one AS's expanded hop-field key, its ISD-AS and (in table mode) the
  per-interface table; the packet bytes are changed in place exactly as the reference router
  changes them, and each packet gets a reason code (0 = OK) from ``scion_appliance.router.reasons``.
- ``batch`` follows the batch convention (N slots in one writable buffer, slot i at i*stride,
  lengths as 'I' items), runs without the GIL, and returns the OK packets grouped by (action,
  egress interface) so the caller sends one group per link.  Its arrays are taken as plain
  buffers (format and length checked), not typed memoryviews: those cost more to set up than
  the step of a 64-packet batch.
- Interface ids are 16-bit; ``now`` is whole unix seconds (pass ``ceil(time.time())`` to match
  the reference router's "expiry before now" test).
- Local delivery in the same process: ``batch(..., recs=)`` also writes the parse record of every
  delivered packet (equal to ``codec``'s ``scion_parse``), and ``take_slots`` copies chosen slots
  with their lengths, source addresses and records into a receiver's own batch layout, so the
  receiver (the gateway) opens them without a socket hop and without parsing them again.
"""

from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS,
    PyBUF_FORMAT,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from scion_appliance._fast.aes_cmac cimport hm_key, hm_key_init, hm_raw_limit
from scion_appliance._fast.codec cimport SCION_OK, ScionRecords, scion_rec_t
from scion_appliance._fast.udpio cimport udpio_addr


cdef extern from "router_step.h" nogil:
    enum:
        RS_OK
        RS_NREASONS
        RS_ACT_NONE
        RS_ACT_FORWARD
        RS_ACT_SIBLING
        RS_ACT_DELIVER
        RS_F_XOVER
        RS_F_PEERING
        RS_F_CONSDIR
        RS_MODE_TABLE
        RS_MODE_INGRESS_ONLY
        RS_MODE_EGRESS_ALL
        RS_LINK_NONE
        RS_LINK_CORE
        RS_LINK_PARENT
        RS_LINK_CHILD
        RS_LINK_PEER
        RS_LINK_MASK
        RS_IF_OWNED
        RS_IF_DOWN

    ctypedef struct rs_config:
        hm_key key
        uint64_t local_ia
        const uint8_t *ifs
        int mode

    ctypedef struct rs_result:
        uint16_t egress
        uint16_t pointer
        uint8_t action
        uint8_t flags

    int rs_step(const rs_config *cfg, uint8_t *pkt, uint32_t len, uint16_t ingress, uint64_t now,
                rs_result *out)
    size_t rs_batch(const rs_config *cfg, uint8_t *buf, size_t stride, const uint32_t *lens, size_t n,
                    uint16_t ingress, uint64_t now, uint8_t *reason, uint8_t *action, uint16_t *egress,
                    uint16_t *pointer, uint32_t *order, uint32_t *group_off, uint32_t *group_key,
                    size_t *n_ok, scion_rec_t *recs)
    void rs_deliver_rec(const uint8_t *pkt, uint32_t len, scion_rec_t *rec)


OK = RS_OK
N_REASONS = RS_NREASONS
ACT_NONE = RS_ACT_NONE
ACT_FORWARD = RS_ACT_FORWARD
ACT_SIBLING = RS_ACT_SIBLING
ACT_DELIVER = RS_ACT_DELIVER
F_XOVER = RS_F_XOVER
F_PEERING = RS_F_PEERING
F_CONSDIR = RS_F_CONSDIR
MODE_TABLE = RS_MODE_TABLE
MODE_INGRESS_ONLY = RS_MODE_INGRESS_ONLY
MODE_EGRESS_ALL = RS_MODE_EGRESS_ALL
LINK_NONE = RS_LINK_NONE
LINK_CORE = RS_LINK_CORE
LINK_PARENT = RS_LINK_PARENT
LINK_CHILD = RS_LINK_CHILD
LINK_PEER = RS_LINK_PEER
IF_OWNED = RS_IF_OWNED
IF_DOWN = RS_IF_DOWN


cdef inline uint64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000 + <uint64_t>ts.tv_nsec


cdef int _check_batch(const unsigned char[::1] buf, const unsigned int[::1] lens, Py_ssize_t n,
                      Py_ssize_t stride) except -1:
    if n < 0 or stride <= 0:
        raise ValueError(f"bad batch shape: n={n}, stride={stride}")
    if lens.shape[0] < n:
        raise ValueError(f"lens holds {lens.shape[0]} entries, batch has {n}")
    if n and buf.shape[0] < n * stride:
        raise ValueError(f"buffer of {buf.shape[0]} bytes cannot hold {n} slots of {stride}")
    return 0


# batch() takes its nine arrays as plain buffers: a typed memoryview costs a few hundred
# nanoseconds to set up per argument, which at batch sizes of 64 was more than the step itself.
# Each array must be C-contiguous with the item type of the typed signature it replaced.
DEF _NBUF = 9  # the most any call here holds at once


cdef struct _Views:
    Py_buffer v[_NBUF]
    int n


cdef inline bint _format_is(const char *fmt, char code) noexcept:
    if fmt == NULL:
        return code == b'B'
    if fmt[0] == b'@':
        fmt += 1
    return fmt[0] == code and fmt[1] == 0


cdef void *_acquire(_Views *vs, object obj, char code, Py_ssize_t itemsize, bint writable,
                    Py_ssize_t need, str name) except NULL:
    cdef Py_buffer *v = &vs.v[vs.n]
    cdef int flags = PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (PyBUF_WRITABLE if writable else 0)
    try:
        PyObject_GetBuffer(obj, v, flags)
    except BufferError as e:
        raise ValueError(f"{name}: {e}") from None
    vs.n += 1
    if v.itemsize != itemsize or not _format_is(v.format, code):
        raise ValueError(f"{name}: items must be '{chr(code)}' ({itemsize} bytes), got "
                         f"'{(<bytes>v.format).decode() if v.format != NULL else 'B'}'")
    if v.len < need * itemsize:
        raise ValueError(f"{name} holds {v.len // itemsize} entries, {need} needed")
    if v.buf == NULL:  # only an empty buffer may have none; it is never read (need was 0)
        return <void *>v
    return v.buf


cdef void _release(_Views *vs) noexcept:
    while vs.n > 0:
        vs.n -= 1
        PyBuffer_Release(&vs.v[vs.n])


cdef class RouterStep:
    """One AS's border-router path processing: hop key, local ISD-AS and interface table."""

    cdef rs_config cfg
    cdef uint8_t *table

    def __cinit__(self, hop_key: bytes, *, int mode=RS_MODE_TABLE, local_ia: int = 0):
        cdef const uint8_t[::1] kb = hop_key
        if kb.shape[0] != 16:
            raise ValueError(f"hop-field key must be 16 bytes, got {kb.shape[0]}")
        if mode not in (RS_MODE_TABLE, RS_MODE_INGRESS_ONLY, RS_MODE_EGRESS_ALL):
            raise ValueError(f"unknown mode {mode}")
        if not 0 <= local_ia < (1 << 64):
            raise ValueError(f"local ISD-AS {local_ia} does not fit 64 bits")
        self.table = NULL
        if mode == RS_MODE_TABLE:
            self.table = <uint8_t *>calloc(65536, 1)
            if self.table == NULL:
                raise MemoryError()
        hm_key_init(&self.cfg.key, &kb[0], 0)
        self.cfg.local_ia = <uint64_t>local_ia
        self.cfg.ifs = self.table
        self.cfg.mode = mode

    def __dealloc__(self):
        memset(&self.cfg.key, 0, sizeof(hm_key))
        if self.table != NULL:
            free(self.table)
            self.table = NULL

    @property
    def mode(self) -> int:
        return self.cfg.mode

    @property
    def local_ia(self) -> int:
        return self.cfg.local_ia

    cdef int _need_table(self, int ifid) except -1:
        if self.table == NULL:
            raise ValueError("interface table exists only in MODE_TABLE")
        if not 0 < ifid <= 0xFFFF:
            raise ValueError(f"interface id {ifid} out of range 1..65535")
        return 0

    def set_interface(self, int ifid, int link_type, *, bint owned, bint up=True) -> None:
        """Declares interface `ifid` of this AS: its link type (LINK_*), whether this router owns
        it (else a sibling router does) and whether it is up."""
        self._need_table(ifid)
        if link_type not in (RS_LINK_CORE, RS_LINK_PARENT, RS_LINK_CHILD, RS_LINK_PEER):
            raise ValueError(f"unknown link type {link_type}")
        self.table[ifid] = <uint8_t>(link_type | (RS_IF_OWNED if owned else 0) | (0 if up else RS_IF_DOWN))

    def set_up(self, int ifid, bint up) -> None:
        """Marks a declared interface (or the sibling that owns it) up or down."""
        self._need_table(ifid)
        if self.table[ifid] & RS_LINK_MASK == RS_LINK_NONE:
            raise ValueError(f"interface {ifid} is not declared")
        if up:
            self.table[ifid] &= ~RS_IF_DOWN
        else:
            self.table[ifid] |= RS_IF_DOWN

    def remove_interface(self, int ifid) -> None:
        self._need_table(ifid)
        self.table[ifid] = 0

    def interface(self, int ifid) -> int:
        """The raw table entry of `ifid` (link type | IF_OWNED | IF_DOWN); 0 when undeclared."""
        self._need_table(ifid)
        return self.table[ifid]

    def step(self, unsigned char[::1] packet, *, int length=-1, int ingress=0, long long now):
        """One step in place on ``packet[:length]`` (whole buffer by default), arriving on
        ``ingress`` (0: from the internal side in table mode; unknown in MODE_INGRESS_ONLY).
        Returns (reason, action, egress, pointer, flags)."""
        cdef rs_result r
        cdef int st
        cdef uint8_t dummy = 0
        cdef uint8_t *p = &dummy
        if length < 0:
            length = packet.shape[0]
        if length > packet.shape[0]:
            raise ValueError(f"length {length} exceeds the buffer ({packet.shape[0]} bytes)")
        if not 0 <= ingress <= 0xFFFF:
            raise ValueError(f"ingress interface {ingress} out of range")
        if now < 0:
            raise ValueError("now must be unix seconds")
        if packet.shape[0] > 0:
            p = &packet[0]
        st = rs_step(&self.cfg, p, <uint32_t>length, <uint16_t>ingress, <uint64_t>now, &r)
        return st, r.action, r.egress, r.pointer, r.flags

    def batch(self, buf, lens, Py_ssize_t n, Py_ssize_t stride, int ingress, long long now, reason, action,
              egress, pointer, order, group_off, group_key, ScionRecords recs=None):
        """The step over n slots (see router_step.h rs_batch): buf (writable bytes, n slots of
        stride), lens (n 'I').  Outputs: reason and action (n bytes), egress and pointer (n 'H'),
        order and group_key (n 'I'), group_off (n + 1 'I'); with ``recs`` (capacity >= n), the
        parse record of each delivered packet in its slot (the others' records are left alone;
        ``recs.count`` becomes n).  Returns (n_ok, n_groups)."""
        cdef _Views vs
        cdef scion_rec_t *precs = NULL
        cdef size_t n_ok = 0, groups = 0
        cdef uint8_t *pbuf
        cdef const uint32_t *plens
        cdef uint8_t *preason
        cdef uint8_t *paction
        cdef uint16_t *pegress
        cdef uint16_t *ppointer
        cdef uint32_t *porder
        cdef uint32_t *pgoff
        cdef uint32_t *pgkey
        if n < 0 or stride <= 0:
            raise ValueError(f"bad batch shape: n={n}, stride={stride}")
        if not 0 <= ingress <= 0xFFFF or now < 0:
            raise ValueError("ingress must be 0..65535 and now unix seconds")
        if recs is not None:
            if recs.capacity < n:
                raise ValueError(f"recs holds {recs.capacity} records, batch has {n}")
            precs = recs.recs
            recs.count = n
        vs.n = 0
        try:
            pbuf = <uint8_t *>_acquire(&vs, buf, b'B', 1, True, n * stride, "buf")
            plens = <const uint32_t *>_acquire(&vs, lens, b'I', 4, False, n, "lens")
            preason = <uint8_t *>_acquire(&vs, reason, b'B', 1, True, n, "reason")
            paction = <uint8_t *>_acquire(&vs, action, b'B', 1, True, n, "action")
            pegress = <uint16_t *>_acquire(&vs, egress, b'H', 2, True, n, "egress")
            ppointer = <uint16_t *>_acquire(&vs, pointer, b'H', 2, True, n, "pointer")
            porder = <uint32_t *>_acquire(&vs, order, b'I', 4, True, n, "order")
            pgoff = <uint32_t *>_acquire(&vs, group_off, b'I', 4, True, n + 1, "group_off")
            pgkey = <uint32_t *>_acquire(&vs, group_key, b'I', 4, True, n, "group_key")
            if n == 0:
                pgoff[0] = 0
                return 0, 0
            with nogil:
                groups = rs_batch(&self.cfg, pbuf, <size_t>stride, plens, <size_t>n, <uint16_t>ingress,
                                  <uint64_t>now, preason, paction, pegress, ppointer, porder, pgoff, pgkey,
                                  &n_ok, precs)
        finally:
            _release(&vs)
        return n_ok, groups

    def bench_batch(self, unsigned char[::1] work, const unsigned char[::1] pristine,
                    const unsigned int[::1] lens, Py_ssize_t n, Py_ssize_t stride, int ingress,
                    long long now, Py_ssize_t hdr_copy, Py_ssize_t rounds, Py_ssize_t restore_off=0,
                    ScionRecords recs=None) -> int:
        """Benchmark loop in C: per round, restore bytes [restore_off, hdr_copy) of every slot
        from `pristine` (what the step rewrites), then run the batch step (writing the records of
        delivered packets into ``recs`` when given).  Returns elapsed nanoseconds (monotonic clock)."""
        cdef scion_rec_t *precs = NULL
        cdef Py_ssize_t i, r, c
        cdef size_t n_ok = 0
        cdef uint64_t t0, t1
        _check_batch(work, lens, n, stride)
        if pristine.shape[0] < work.shape[0] or n <= 0 or rounds <= 0:
            raise ValueError("pristine must cover work; n and rounds must be positive")
        if recs is not None:
            if recs.capacity < n:
                raise ValueError(f"recs holds {recs.capacity} records, batch has {n}")
            precs = recs.recs
            recs.count = n
        cdef unsigned char[::1] reason = bytearray(n), action = bytearray(n)
        cdef unsigned short[::1] egress = memoryview(bytearray(2 * n)).cast("H")
        cdef unsigned short[::1] pointer = memoryview(bytearray(2 * n)).cast("H")
        cdef unsigned int[::1] order = memoryview(bytearray(4 * n)).cast("I")
        cdef unsigned int[::1] group_off = memoryview(bytearray(4 * (n + 1))).cast("I")
        cdef unsigned int[::1] group_key = memoryview(bytearray(4 * n)).cast("I")
        c = hdr_copy if hdr_copy < stride else stride
        if not 0 <= restore_off <= c:
            raise ValueError("restore_off must lie within the restored header")
        c -= restore_off
        with nogil:
            t0 = _now_ns()
            for r in range(rounds):
                for i in range(n):
                    memcpy(&work[i * stride + restore_off], &pristine[i * stride + restore_off], <size_t>c)
                rs_batch(&self.cfg, &work[0], <size_t>stride, &lens[0], <size_t>n, <uint16_t>ingress,
                         <uint64_t>now, &reason[0], &action[0], &egress[0], &pointer[0], &order[0],
                         &group_off[0], &group_key[0], &n_ok, precs)
            t1 = _now_ns()
        return <long long>(t1 - t0)


def deliver_record(const unsigned char[::1] packet, ScionRecords recs, Py_ssize_t i=0) -> None:
    """Writes record ``i`` of ``recs`` the way ``batch`` does for a delivered packet (read it
    with ``recs.get(i)``; equal to ``codec.parse_record(packet)`` for any bytes)."""
    cdef const uint8_t *p = <const uint8_t *>b""
    if not 0 <= i < recs.capacity:
        raise IndexError(i)
    if packet.shape[0] > 0xFFFFFFFF:
        raise ValueError("packet too long")
    if packet.shape[0]:
        p = &packet[0]
    rs_deliver_rec(p, <uint32_t>packet.shape[0], &recs.recs[i])
    if recs.count <= i:
        recs.count = i + 1


def split_local(buf, Py_ssize_t stride, ScionRecords recs, order, Py_ssize_t start, Py_ssize_t end,
                const unsigned char[::1] host, int port, local_out, rest_out):
    """Of the delivered slots ``order[start:end]`` (their records written by ``batch``), the valid UDP
    datagrams to ``host`` (packed IPv4/IPv6) and UDP port ``port`` go to ``local_out``, all others to
    ``rest_out``, each in arrival order.  Only the plain case is decided here (a record that parsed,
    UDP, a non-service host equal to ``host``, destination port equal to ``port``); whatever else
    the caller decides itself.  Returns (number local, number rest)."""
    cdef _Views vs
    cdef Py_ssize_t j, i, nl = 0, nr = 0, hl = host.shape[0]
    cdef const uint8_t *pbuf
    cdef const uint32_t *porder
    cdef uint32_t *plocal
    cdef uint32_t *prest
    cdef const scion_rec_t *r
    cdef const scion_rec_t *precs = recs.recs
    cdef const uint8_t *phost = &host[0] if hl else NULL
    if not 0 <= start <= end or stride < 44 or end > recs.capacity or hl not in (4, 16):
        raise ValueError(f"bad range {start}..{end} of {recs.capacity}, stride {stride}, host {hl} bytes")
    vs.n = 0
    try:
        pbuf = <const uint8_t *>_acquire(&vs, buf, b'B', 1, False, 0, "buf")
        porder = <const uint32_t *>_acquire(&vs, order, b'I', 4, False, end, "order")
        plocal = <uint32_t *>_acquire(&vs, local_out, b'I', 4, True, end - start, "local_out")
        prest = <uint32_t *>_acquire(&vs, rest_out, b'I', 4, True, end - start, "rest_out")
        for j in range(start, end):
            if porder[j] >= recs.capacity or (porder[j] + 1) * stride > vs.v[0].len:
                raise ValueError(f"slot {porder[j]} outside the batch")
        with nogil:
            for j in range(start, end):
                i = porder[j]
                r = &precs[i]
                if (r.status == SCION_OK and r.l4_proto == 17 and (r.dst_addr_type & 0xC) == 0
                        and r.dst_host_len == hl and r.dst_port == port
                        and memcmp(pbuf + i * stride + r.dst_host_off, phost, <size_t>hl) == 0):
                    plocal[nl] = <uint32_t>i
                    nl += 1
                else:
                    prest[nr] = <uint32_t>i
                    nr += 1
    finally:
        _release(&vs)
    return nl, nr


def take_slots(src_buf, Py_ssize_t src_stride, src_lens, src_addrs, ScionRecords src_recs, slots,
               Py_ssize_t count, dst_buf, Py_ssize_t dst_stride, dst_lens, dst_addrs,
               ScionRecords dst_recs):
    """Copies slots ``slots[0:count]`` of a batch (bytes, 'I' lengths, ``udpio`` address records,
    parse records) to the first slots of another batch layout, in order, leaving out packets longer
    than ``dst_stride`` (the caller counts them: count minus what this returns).  Returns how many
    were copied; ``dst_recs.count`` becomes that."""
    cdef _Views vs
    cdef Py_ssize_t k, i, n_src, m = 0
    cdef uint32_t length
    cdef const uint8_t *sbuf
    cdef const uint32_t *slens
    cdef const udpio_addr *saddrs
    cdef const uint32_t *pslots
    cdef uint8_t *dbuf
    cdef uint32_t *dlens
    cdef udpio_addr *daddrs
    cdef const scion_rec_t *srecs
    cdef scion_rec_t *drecs
    if count < 0 or src_stride <= 0 or dst_stride <= 0:
        raise ValueError(f"bad shape: count={count}, strides {src_stride}, {dst_stride}")
    if count > dst_recs.capacity:
        raise ValueError(f"{count} slots do not fit {dst_recs.capacity} records")
    n_src = src_recs.capacity
    vs.n = 0
    try:
        pslots = <const uint32_t *>_acquire(&vs, slots, b'I', 4, False, count, "slots")
        sbuf = <const uint8_t *>_acquire(&vs, src_buf, b'B', 1, False, 0, "src_buf")
        slens = <const uint32_t *>_acquire(&vs, src_lens, b'I', 4, False, 0, "src_lens")
        saddrs = <const udpio_addr *>_acquire(&vs, src_addrs, b'B', 1, False, 0, "src_addrs")
        n_src = min(n_src, vs.v[1].len // src_stride, vs.v[2].len // 4,
                    vs.v[3].len // <Py_ssize_t>sizeof(udpio_addr))
        dbuf = <uint8_t *>_acquire(&vs, dst_buf, b'B', 1, True, count * dst_stride, "dst_buf")
        dlens = <uint32_t *>_acquire(&vs, dst_lens, b'I', 4, True, count, "dst_lens")
        daddrs = <udpio_addr *>_acquire(&vs, dst_addrs, b'B', 1, True, count * sizeof(udpio_addr),
                                        "dst_addrs")
        for k in range(count):
            i = pslots[k]
            if i >= n_src:
                raise ValueError(f"slot {i} outside the source batch of {n_src}")
            if slens[i] > <uint32_t>src_stride:
                raise ValueError(f"slot {i}: length {slens[i]} beyond its slot of {src_stride}")
        srecs, drecs = src_recs.recs, dst_recs.recs
        with nogil:
            for k in range(count):
                i = pslots[k]
                length = slens[i]
                if length > <uint32_t>dst_stride:
                    continue
                memcpy(dbuf + m * dst_stride, sbuf + i * src_stride, length)
                dlens[m] = length
                daddrs[m] = saddrs[i]
                drecs[m] = srecs[i]
                m += 1
    finally:
        _release(&vs)
    dst_recs.count = m
    return m


def _c_limit(hop_key: bytes, const unsigned char[::1] buf, const unsigned int[::1] lens, Py_ssize_t n,
             Py_ssize_t stride, Py_ssize_t hdr_copy, unsigned int blocks, Py_ssize_t rounds) -> int:
    """The raw limit in plain C, timed like ``RouterStep.bench_batch``: per round and packet, copy
    hdr_copy header bytes and run `blocks` AES-CMAC blocks.  Returns elapsed nanoseconds."""
    cdef const uint8_t[::1] kb = hop_key
    cdef hm_key k
    cdef Py_ssize_t r
    cdef uint64_t t0, t1
    cdef uint32_t sink = 0
    if kb.shape[0] != 16:
        raise ValueError("hop-field key must be 16 bytes")
    _check_batch(buf, lens, n, stride)
    if n <= 0 or rounds <= 0 or not 0 < hdr_copy <= stride:
        raise ValueError("n and rounds must be positive, hdr_copy in 1..stride")
    cdef unsigned char[::1] scratch = bytearray(hdr_copy)
    hm_key_init(&k, &kb[0], 0)
    with nogil:
        t0 = _now_ns()
        for r in range(rounds):
            sink += hm_raw_limit(&k, &buf[0], <size_t>stride, &lens[0], <size_t>n, <size_t>hdr_copy,
                                 blocks, &scratch[0])
        t1 = _now_ns()
    memset(&k, 0, sizeof(hm_key))
    if sink == 0xFFFFFFFF:  # keeps the work observable
        return -1
    return <long long>(t1 - t0)
