# distutils: sources = csrc/scion_parse.c
"""SCION packet parsing at batch speed: the C parser of csrc/scion_parse.c behind a small Python face.

Rules kept here:
- A batch is N slots in one contiguous buffer (slot i at i*stride) with a uint32 length per slot; the
  parse of a whole batch runs without the GIL and without a Python object per packet.
- Results are fixed-layout records (``ScionRecords``); Python reads one as a dict only when it asks.
- Reason codes come from C; ``REASONS[code]`` is the name shared by counters, logs and exceptions.
"""

from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport uint8_t, uint32_t

REASONS = tuple(scion_reason_names[i].decode() for i in range(SCION_REASON_COUNT))
RECORD_SIZE = sizeof(scion_rec_t)


cdef dict _record_dict(const scion_rec_t *r):
    return {
        "status": r.status,
        "reason": REASONS[r.status],
        "err_offset": r.err_offset,
        "version": r.version,
        "traffic_class": r.traffic_class,
        "flow_id": r.flow_id,
        "next_hdr": r.next_hdr,
        "hdr_len": r.hdr_len,
        "payload_len": r.payload_len,
        "path_type": r.path_type,
        "dst_addr_type": r.dst_addr_type,
        "src_addr_type": r.src_addr_type,
        "dst_ia": r.dst_ia,
        "src_ia": r.src_ia,
        "dst_host_off": r.dst_host_off,
        "dst_host_len": r.dst_host_len,
        "src_host_off": r.src_host_off,
        "src_host_len": r.src_host_len,
        "path_off": r.path_off,
        "path_len": r.path_len,
        "curr_inf": r.curr_inf,
        "curr_hf": r.curr_hf,
        "num_inf": r.num_inf,
        "num_hops": r.num_hops,
        "seg_len": (r.seg_len[0], r.seg_len[1], r.seg_len[2]),
        "hbh_off": r.hbh_off,
        "hbh_len": r.hbh_len,
        "e2e_off": r.e2e_off,
        "e2e_len": r.e2e_len,
        "l4_proto": r.l4_proto,
        "l4_off": r.l4_off,
        "l4_len": r.l4_len,
        "src_port": r.src_port,
        "dst_port": r.dst_port,
        "scmp_type": r.scmp_type,
        "scmp_code": r.scmp_code,
    }


def parse_record(const uint8_t[::1] packet):
    """Parses one packet; returns its record as a dict (``status`` 0 when valid)."""
    cdef scion_rec_t rec
    cdef size_t n = packet.shape[0]
    # An empty memoryview has no valid data pointer; the parser never reads it when n is 0.
    cdef const uint8_t *p = &packet[0] if n else <const uint8_t *>b""
    with nogil:
        scion_parse(p, n, &rec)
    return _record_dict(&rec)


def l4_checksum(const uint8_t[::1] packet, bint zero_field=False):
    """Upper-layer checksum of a valid packet over the SCION pseudo-header.

    With ``zero_field`` false, returns 0 when the stored checksum is right. With it true, returns the
    value to store. Raises ValueError when the packet does not parse.
    """
    cdef scion_rec_t rec
    cdef size_t n = packet.shape[0]
    if n == 0 or scion_parse(&packet[0], n, &rec) != SCION_OK:
        raise ValueError("packet does not parse: " + REASONS[rec.status if n else 1])
    return scion_l4_checksum(&packet[0], &rec, zero_field)


cdef class ScionRecords:
    """A reusable array of parse records, one per slot of a batch."""

    def __cinit__(self, Py_ssize_t capacity):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.recs = <scion_rec_t *>PyMem_Calloc(capacity, sizeof(scion_rec_t))
        if self.recs == NULL:
            raise MemoryError()
        self.capacity = capacity
        self.count = 0

    def __dealloc__(self):
        PyMem_Free(self.recs)

    def parse_batch(self, const uint8_t[::1] slots, Py_ssize_t stride, const uint32_t[::1] lengths,
                    Py_ssize_t count):
        """Parses ``count`` packets of a batch; returns how many are valid."""
        if count < 0 or count > self.capacity or count > lengths.shape[0]:
            raise ValueError("count exceeds the records' capacity or the lengths given")
        if stride <= 0 or count * stride > slots.shape[0]:
            raise ValueError("count * stride exceeds the slot buffer")
        cdef size_t ok = 0
        if count:
            with nogil:
                ok = scion_parse_batch(&slots[0], <size_t>stride, &lengths[0], <size_t>count, self.recs)
        self.count = count
        return ok

    def status(self, Py_ssize_t i):
        self._check(i)
        return self.recs[i].status

    def statuses(self):
        """Status codes of the last parsed batch, as a list."""
        return [self.recs[i].status for i in range(self.count)]

    def get(self, Py_ssize_t i):
        """Record ``i`` of the last parsed batch as a dict."""
        self._check(i)
        return _record_dict(&self.recs[i])

    def _check(self, Py_ssize_t i):
        if i < 0 or i >= self.count:
            raise IndexError(i)
