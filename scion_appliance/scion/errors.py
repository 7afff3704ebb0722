"""Why a SCION packet does not parse: one exception class per family of reason codes.

Rules kept here:
- Every parse failure is a ``ScionParseError`` carrying ``reason`` (the name shared with the batch
  parser's codes, counters and logs) and ``offset`` (the byte where the problem was found).
- ``REASONS`` mirrors the C parser's reason table in order; a test checks the two agree.
"""

from __future__ import annotations

REASONS: tuple[str, ...] = (
    "ok",
    "truncated_common_header",
    "bad_version",
    "bad_header_length",
    "truncated_header",
    "bad_address_type",
    "truncated_payload",
    "trailing_bytes",
    "bad_path_length",
    "bad_path_meta",
    "bad_current_info_field",
    "bad_current_hop_field",
    "truncated_extension",
    "bad_extension_order",
    "bad_extension_option",
    "truncated_l4_header",
    "bad_udp_length",
)


class ScionParseError(ValueError):
    """A packet that is not valid SCION; ``reason`` and ``offset`` say why and where."""

    def __init__(self, reason: str, offset: int, detail: str = "") -> None:
        self.reason = reason
        self.offset = offset
        text = f"{reason} at byte {offset}"
        super().__init__(f"{text}: {detail}" if detail else text)


class TruncatedPacket(ScionParseError):
    """The packet ends before a header or field it announces."""


class BadCommonHeader(ScionParseError):
    """Version, header length or payload length in the common header are inconsistent."""


class BadAddressHeader(ScionParseError):
    """A host address type/length code is reserved."""


class BadPath(ScionParseError):
    """The path's length, meta header or current pointers are inconsistent."""


class BadExtension(ScionParseError):
    """An extension header is out of order or its options do not fill it exactly."""


class BadL4Header(ScionParseError):
    """The upper-layer header is inconsistent (e.g. UDP length)."""


_CLASS_BY_REASON: dict[str, type[ScionParseError]] = {
    "truncated_common_header": TruncatedPacket,
    "truncated_header": TruncatedPacket,
    "truncated_payload": TruncatedPacket,
    "truncated_extension": TruncatedPacket,
    "truncated_l4_header": TruncatedPacket,
    "bad_version": BadCommonHeader,
    "bad_header_length": BadCommonHeader,
    "trailing_bytes": BadCommonHeader,
    "bad_address_type": BadAddressHeader,
    "bad_path_length": BadPath,
    "bad_path_meta": BadPath,
    "bad_current_info_field": BadPath,
    "bad_current_hop_field": BadPath,
    "bad_extension_order": BadExtension,
    "bad_extension_option": BadExtension,
    "bad_udp_length": BadL4Header,
}


def error_for(reason: str, offset: int, detail: str = "") -> ScionParseError:
    """The exception for a reason code name."""
    return _CLASS_BY_REASON.get(reason, ScionParseError)(reason, offset, detail)
