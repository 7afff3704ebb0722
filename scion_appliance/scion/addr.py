"""SCION addresses: ISD-AS identifiers and host addresses (IPv4, IPv6, SVC).

Rules kept here:
- ISD is 16 bits, AS 48 bits. Text forms follow scionproto: ASes up to 2^32-1 are written in BGP-style
  decimal ("1-64512"), larger ones as three colon-separated 16-bit hex groups ("1-ff00:0:110").
  Parsing accepts both forms, and rejects values out of range with ``AddressError``.
- A host address is the 4-bit type/length code of the address header plus its bytes:
  0x0 IPv4 (4 B), 0x3 IPv6 (16 B), 0x4 SVC (2-byte service id + 2 zero bytes).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import ClassVar

MAX_ISD = 0xFFFF
MAX_AS = (1 << 48) - 1
MAX_BGP_AS = (1 << 32) - 1

HOST_IPV4 = 0x0
HOST_IPV6 = 0x3
HOST_SVC = 0x4


class AddressError(ValueError):
    """A malformed or out-of-range ISD-AS or host address."""


def parse_as(text: str) -> int:
    """Parses an AS number in decimal (BGP) or colon-separated hex form."""
    if ":" in text:
        groups = text.split(":")
        if len(groups) != 3:
            raise AddressError(f"AS {text!r}: hex form needs three groups like ff00:0:110")
        value = 0
        for g in groups:
            if not g or len(g) > 4 or any(c not in "0123456789abcdefABCDEF" for c in g):
                raise AddressError(f"AS {text!r}: group {g!r} is not 1 to 4 hex digits")
            value = (value << 16) | int(g, 16)
        return value
    if not text.isdigit() or not text.isascii():
        raise AddressError(f"AS {text!r}: expected decimal (BGP) or hex groups like ff00:0:110")
    value = int(text)
    if value > MAX_BGP_AS:
        raise AddressError(f"AS {text!r}: decimal ASes end at {MAX_BGP_AS}; write larger ones in hex")
    return value


def format_as(value: int) -> str:
    if not 0 <= value <= MAX_AS:
        raise AddressError(f"AS {value} is out of range (0 to 2^48-1)")
    if value <= MAX_BGP_AS:
        return str(value)
    return f"{value >> 32:x}:{(value >> 16) & 0xFFFF:x}:{value & 0xFFFF:x}"


@dataclass(frozen=True, order=True)
class IA:
    """An ISD-AS pair, e.g. ``IA.parse("1-ff00:0:110")``."""

    isd: int
    asn: int

    def __post_init__(self) -> None:
        if not 0 <= self.isd <= MAX_ISD:
            raise AddressError(f"ISD {self.isd} is out of range (0 to 65535)")
        if not 0 <= self.asn <= MAX_AS:
            raise AddressError(f"AS {self.asn} is out of range (0 to 2^48-1)")

    @classmethod
    def parse(cls, text: str) -> IA:
        isd_text, sep, as_text = text.partition("-")
        if not sep:
            raise AddressError(f"ISD-AS {text!r}: expected ISD-AS like 1-ff00:0:110")
        if not isd_text.isdigit() or not isd_text.isascii():
            raise AddressError(f"ISD-AS {text!r}: ISD {isd_text!r} is not a decimal number")
        isd = int(isd_text)
        if isd > MAX_ISD:
            raise AddressError(f"ISD-AS {text!r}: ISD {isd} is out of range (0 to 65535)")
        try:
            return cls(isd, parse_as(as_text))
        except AddressError as e:
            raise AddressError(f"ISD-AS {text!r}: {e}") from None

    @classmethod
    def from_int(cls, value: int) -> IA:
        return cls(value >> 48, value & MAX_AS)

    @classmethod
    def from_bytes(cls, raw: bytes) -> IA:
        if len(raw) != 8:
            raise AddressError(f"ISD-AS needs 8 bytes, got {len(raw)}")
        return cls.from_int(int.from_bytes(raw, "big"))

    def __int__(self) -> int:
        return (self.isd << 48) | self.asn

    def to_bytes(self) -> bytes:
        return int(self).to_bytes(8, "big")

    def __str__(self) -> str:
        return f"{self.isd}-{format_as(self.asn)}"


@dataclass(frozen=True)
class SVC:
    """A SCION service address (anycast, or multicast with the 0x8000 flag)."""

    value: int

    NAMES: ClassVar[dict[int, str]] = {0x0001: "DS", 0x0002: "CS", 0x0010: "Wildcard", 0xFFFF: "None"}

    def __post_init__(self) -> None:
        if not 0 <= self.value <= 0xFFFF:
            raise AddressError(f"SVC {self.value} is out of range (16 bits)")

    def __str__(self) -> str:
        if self.value == 0xFFFF:
            return "None"
        base = self.value & 0x7FFF
        name = self.NAMES.get(base, f"0x{base:04x}")
        return f"{name}_M" if self.value & 0x8000 else f"{name}_A"


HostAddr = ipaddress.IPv4Address | ipaddress.IPv6Address | SVC


def host_from_bytes(addr_type: int, raw: bytes) -> HostAddr:
    """Decodes a host address from its type/length code and bytes."""
    if addr_type == HOST_IPV4 and len(raw) == 4:
        return ipaddress.IPv4Address(raw)
    if addr_type == HOST_IPV6 and len(raw) == 16:
        return ipaddress.IPv6Address(raw)
    if addr_type == HOST_SVC and len(raw) == 4:
        return SVC(int.from_bytes(raw[:2], "big"))
    raise AddressError(f"host address type 0x{addr_type:x} with {len(raw)} bytes is not IPv4, IPv6 or SVC")


def host_to_bytes(host: HostAddr) -> tuple[int, bytes]:
    """Returns the type/length code and bytes of a host address."""
    if isinstance(host, ipaddress.IPv4Address):
        return HOST_IPV4, host.packed
    if isinstance(host, ipaddress.IPv6Address):
        return HOST_IPV6, host.packed
    return HOST_SVC, host.value.to_bytes(2, "big") + b"\x00\x00"


def parse_host(text: str) -> HostAddr:
    """Parses an IPv4/IPv6 address or an SVC name (CS, DS, CS_A, CS_M, ...)."""
    names = {v: k for k, v in SVC.NAMES.items()}
    base, _, suffix = text.partition("_")
    if base in names and suffix in ("", "A", "M"):
        return SVC(names[base] | (0x8000 if suffix == "M" else 0))
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise AddressError(f"host {text!r} is not an IPv4/IPv6 address or SVC name") from None
