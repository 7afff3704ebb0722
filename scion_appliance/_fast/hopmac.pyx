# distutils: sources = csrc/aes_cmac.c
# distutils: libraries = crypto
"""Hop-field MACs: AES-128-CMAC over the 16-byte SCION MAC input, keyed per AS.

Rules kept here:
- A ``HopFieldKey`` expands its key once (AES round keys and the CMAC subkey K1); each MAC is
  then one AES block (AES-NI when the CPU has it, OpenSSL otherwise).
- The hop field carries the first 6 bytes of the CMAC; comparisons are constant time.
- Key material held in C is wiped when the object goes away.
- ``derive_hop_key`` turns an AS master key into the hop-field key the way scionproto's
  ``scrypto.DeriveHFMacKey`` does: PBKDF2-HMAC-SHA256(master, "Derive OF Key", 1000, 16 bytes).
"""

import hashlib

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memset

from scion_appliance._fast.aes_cmac cimport (
    HM_MAC_LEN,
    hm_aes_block,
    hm_cmac_block,
    hm_cpu_has_aesni,
    hm_ct_equal,
    hm_hop_mac,
    hm_key,
    hm_key_init,
    hm_mac_input,
)

HOP_KEY_SALT = b"Derive OF Key"
HOP_KEY_ITERATIONS = 1000
HOP_KEY_LEN = 16
MAC_LEN = HM_MAC_LEN


def derive_hop_key(master: bytes) -> bytes:
    """The 16-byte hop-field MAC key derived from an AS master key."""
    if len(master) == 0:
        raise ValueError("master key is empty")
    return hashlib.pbkdf2_hmac("sha256", bytes(master), HOP_KEY_SALT, HOP_KEY_ITERATIONS, HOP_KEY_LEN)


def has_aesni() -> bool:
    """True when this CPU's AES-NI instructions are used."""
    return hm_cpu_has_aesni() != 0


def mac_input(int seg_id, long long timestamp, int exp_time, int cons_ingress, int cons_egress) -> bytes:
    """The 16-byte MAC input block (pkg/slayers/path/mac.go MACInput layout)."""
    _check_fields(seg_id, timestamp, exp_time, cons_ingress, cons_egress)
    cdef uint8_t buf[16]
    hm_mac_input(buf, <uint16_t>seg_id, <uint32_t>timestamp, <uint8_t>exp_time,
                 <uint16_t>cons_ingress, <uint16_t>cons_egress)
    return buf[:16]


def ct_equal(a: bytes, b: bytes) -> bool:
    """Constant-time equality of two byte strings (time depends on the length only)."""
    cdef const uint8_t[::1] x = a
    cdef const uint8_t[::1] y = b
    if x.shape[0] != y.shape[0]:
        return False
    if x.shape[0] == 0:
        return True
    return hm_ct_equal(&x[0], &y[0], <size_t>x.shape[0]) != 0


cdef int _check_fields(int seg_id, long long timestamp, int exp_time, int cons_ingress,
                       int cons_egress) except -1:
    if not 0 <= seg_id <= 0xFFFF:
        raise ValueError(f"seg_id {seg_id} out of range 0..65535")
    if not 0 <= timestamp <= 0xFFFFFFFF:
        raise ValueError(f"timestamp {timestamp} out of range for 32 bits")
    if not 0 <= exp_time <= 0xFF:
        raise ValueError(f"exp_time {exp_time} out of range 0..255")
    if not 0 <= cons_ingress <= 0xFFFF or not 0 <= cons_egress <= 0xFFFF:
        raise ValueError(f"interface ids ({cons_ingress}, {cons_egress}) out of range 0..65535")
    return 0


cdef class HopFieldKey:
    """An expanded hop-field MAC key (16 bytes, already derived from the master key)."""

    cdef hm_key k

    def __cinit__(self, key: bytes, *, portable: bool = False):
        cdef const uint8_t[::1] kb = key
        if kb.shape[0] != 16:
            raise ValueError(f"hop-field key must be 16 bytes, got {kb.shape[0]}")
        hm_key_init(&self.k, &kb[0], 1 if portable else 0)

    def __dealloc__(self):
        memset(&self.k, 0, sizeof(hm_key))

    @property
    def uses_aesni(self) -> bool:
        return self.k.use_ni != 0

    def aes(self, block: bytes) -> bytes:
        """AES-128 encryption of one 16-byte block (for known-answer tests)."""
        cdef const uint8_t[::1] b = block
        cdef uint8_t out[16]
        if b.shape[0] != 16:
            raise ValueError("AES block must be 16 bytes")
        hm_aes_block(&self.k, &b[0], out)
        return out[:16]

    def mac(self, input16: bytes) -> bytes:
        """Full 16-byte AES-CMAC of one complete 16-byte message."""
        cdef const uint8_t[::1] b = input16
        cdef uint8_t out[16]
        if b.shape[0] != 16:
            raise ValueError("MAC input must be exactly 16 bytes")
        hm_cmac_block(&self.k, &b[0], out)
        return out[:16]

    def full_hop_mac(self, int seg_id, long long timestamp, int exp_time, int cons_ingress,
                     int cons_egress) -> bytes:
        """All 16 bytes of the hop-field CMAC (SegID is beta, the chained value)."""
        _check_fields(seg_id, timestamp, exp_time, cons_ingress, cons_egress)
        cdef uint8_t out[16]
        hm_hop_mac(&self.k, <uint16_t>seg_id, <uint32_t>timestamp, <uint8_t>exp_time,
                   <uint16_t>cons_ingress, <uint16_t>cons_egress, out)
        return out[:16]

    def hop_mac(self, int seg_id, long long timestamp, int exp_time, int cons_ingress,
                int cons_egress) -> bytes:
        """The 6-byte MAC a hop field carries."""
        return self.full_hop_mac(seg_id, timestamp, exp_time, cons_ingress, cons_egress)[:HM_MAC_LEN]

    def verify(self, int seg_id, long long timestamp, int exp_time, int cons_ingress,
               int cons_egress, mac: bytes) -> bool:
        """Constant-time check of a hop field's 6-byte MAC."""
        cdef const uint8_t[::1] m = mac
        cdef uint8_t out[16]
        _check_fields(seg_id, timestamp, exp_time, cons_ingress, cons_egress)
        if m.shape[0] != HM_MAC_LEN:
            return False
        hm_hop_mac(&self.k, <uint16_t>seg_id, <uint32_t>timestamp, <uint8_t>exp_time,
                   <uint16_t>cons_ingress, <uint16_t>cons_egress, out)
        return hm_ct_equal(out, &m[0], HM_MAC_LEN) != 0
