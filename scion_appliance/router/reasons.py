"""Reason codes of the router's path processing: one name per code, shared by counters and logs.

Rules kept here:
- The integer codes are those of ``csrc/router_step.h`` (enum rs_reason); ``NAMES[code]`` is the
  string used as a counter label and in log lines.  tests/test_router_step.py checks both agree.
- ``scmp_for`` says which SCMP error the reference router (scionproto router/dataplane.go) sends
  back for a reason, or None where it silently discards; the pointer comes from the step.
"""

from __future__ import annotations

from typing import Final

OK: Final = 0
TRUNCATED: Final = 1
BAD_HDR_LEN: Final = 2
BAD_PACKET_SIZE: Final = 3
UNSUPPORTED_PATH_TYPE: Final = 4
MALFORMED_PATH: Final = 5
BAD_CURR_INF: Final = 6
BAD_CURR_HF: Final = 7
EXPIRED_HOP: Final = 8
INGRESS_MISMATCH: Final = 9
INVALID_SRC_IA: Final = 10
INVALID_DST_IA: Final = 11
BAD_MAC: Final = 12
UNKNOWN_EGRESS: Final = 13
INVALID_LINK_PAIR: Final = 14
INVALID_SEGMENT_CHANGE: Final = 15
EGRESS_DOWN: Final = 16
SIBLING_DOWN: Final = 17
PATH_AT_END: Final = 18
ROUTER_ALERT_INGRESS: Final = 19
ROUTER_ALERT_EGRESS: Final = 20
NO_INGRESS_IF: Final = 21

NAMES: Final[tuple[str, ...]] = (
    "ok",
    "truncated",
    "bad_hdr_len",
    "bad_packet_size",
    "unsupported_path_type",
    "malformed_path",
    "bad_curr_inf",
    "bad_curr_hf",
    "expired_hop",
    "ingress_mismatch",
    "invalid_src_ia",
    "invalid_dst_ia",
    "bad_mac",
    "unknown_egress",
    "invalid_link_pair",
    "invalid_segment_change",
    "egress_down",
    "sibling_down",
    "path_at_end",
    "router_alert_ingress",
    "router_alert_egress",
    "no_ingress_if",
)

# Not drops: the packet goes to the slow path, which answers a traceroute request.
SLOW_PATH: Final = frozenset({ROUTER_ALERT_INGRESS, ROUTER_ALERT_EGRESS})

# SCMP types and parameter-problem codes (pkg/slayers/scmp_typecode.go).
SCMP_PARAMETER_PROBLEM: Final = 4
SCMP_EXTERNAL_INTERFACE_DOWN: Final = 5
SCMP_INTERNAL_CONNECTIVITY_DOWN: Final = 6
CODE_INVALID_PACKET_SIZE: Final = 19
CODE_INVALID_SOURCE_ADDRESS: Final = 33
CODE_INVALID_DESTINATION_ADDRESS: Final = 34
CODE_INVALID_PATH: Final = 48
CODE_UNKNOWN_HOP_FIELD_INGRESS: Final = 49
CODE_UNKNOWN_HOP_FIELD_EGRESS: Final = 50
CODE_INVALID_HOP_FIELD_MAC: Final = 51
CODE_PATH_EXPIRED: Final = 52
CODE_INVALID_SEGMENT_CHANGE: Final = 53

_FIXED_SCMP: Final[dict[int, tuple[int, int]]] = {
    BAD_PACKET_SIZE: (SCMP_PARAMETER_PROBLEM, CODE_INVALID_PACKET_SIZE),
    EXPIRED_HOP: (SCMP_PARAMETER_PROBLEM, CODE_PATH_EXPIRED),
    INVALID_SRC_IA: (SCMP_PARAMETER_PROBLEM, CODE_INVALID_SOURCE_ADDRESS),
    INVALID_DST_IA: (SCMP_PARAMETER_PROBLEM, CODE_INVALID_DESTINATION_ADDRESS),
    BAD_MAC: (SCMP_PARAMETER_PROBLEM, CODE_INVALID_HOP_FIELD_MAC),
    INVALID_LINK_PAIR: (SCMP_PARAMETER_PROBLEM, CODE_INVALID_PATH),
    INVALID_SEGMENT_CHANGE: (SCMP_PARAMETER_PROBLEM, CODE_INVALID_SEGMENT_CHANGE),
    EGRESS_DOWN: (SCMP_EXTERNAL_INTERFACE_DOWN, 0),
    SIBLING_DOWN: (SCMP_INTERNAL_CONNECTIVITY_DOWN, 0),
}


def name(code: int) -> str:
    """The reason's label; unknown codes get a label too, so a counter never fails."""
    return NAMES[code] if 0 <= code < len(NAMES) else f"reason_{code}"


def scmp_for(code: int, *, cons_dir: bool) -> tuple[int, int] | None:
    """(SCMP type, code) the reference router answers with, or None for a silent drop.

    ``cons_dir`` is the current info field's direction (the step's F_CONSDIR flag): it picks
    between "unknown hop field ingress" and "... egress" as scionproto does."""
    if code == INGRESS_MISMATCH:
        return SCMP_PARAMETER_PROBLEM, (
            CODE_UNKNOWN_HOP_FIELD_INGRESS if cons_dir else CODE_UNKNOWN_HOP_FIELD_EGRESS
        )
    if code == UNKNOWN_EGRESS:
        return SCMP_PARAMETER_PROBLEM, (
            CODE_UNKNOWN_HOP_FIELD_EGRESS if cons_dir else CODE_UNKNOWN_HOP_FIELD_INGRESS
        )
    return _FIXED_SCMP.get(code)
