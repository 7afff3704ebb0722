"""Errors of one router processing step: each names its reason code and what the reference does.

Rules kept here:
- Every error is a ``RouterDropError`` with ``reason`` (the label from ``reasons.NAMES``), ``code``
  (the integer), ``pointer`` (SCMP parameter-problem pointer into the packet), ``egress`` and
  ``scmp`` ((type, code) the reference router answers with, or None for a silent drop).
- ``error_for`` maps a step's result to the most specific class.
"""

from __future__ import annotations

from scion_appliance.router import reasons


class RouterDropError(Exception):
    """The router does not forward this packet (the reason says why)."""

    def __init__(self, code: int, *, pointer: int = 0, egress: int = 0, cons_dir: bool = False) -> None:
        self.code = code
        self.reason = reasons.name(code)
        self.pointer = pointer
        self.egress = egress
        self.scmp = reasons.scmp_for(code, cons_dir=cons_dir)
        detail = f" (SCMP {self.scmp[0]}/{self.scmp[1]}, pointer {pointer})" if self.scmp else ""
        super().__init__(f"packet dropped: {self.reason}{detail}")


class TruncatedPacket(RouterDropError):
    """Shorter than its headers say, or lengths that disagree."""


class UnsupportedPathType(RouterDropError):
    """A path type this router does not forward."""


class MalformedPath(RouterDropError):
    """The SCION path's meta header, segments or current indices are inconsistent."""


class ExpiredHop(RouterDropError):
    """The current hop field has expired."""


class IngressMismatch(RouterDropError):
    """The hop field's ingress interface is not the one the packet arrived on."""


class InvalidAddress(RouterDropError):
    """Source or destination ISD-AS not allowed at this point of the path."""


class InvalidHopMac(RouterDropError):
    """The hop field's MAC does not verify under this AS's key."""


class UnknownEgress(RouterDropError):
    """The egress interface is not one this router can forward to."""


class InvalidRoute(RouterDropError):
    """Ingress and egress links do not make a valid hop or segment change."""


class InterfaceDown(RouterDropError):
    """The egress link (or the sibling router owning it) is down."""


class PathAtEnd(RouterDropError):
    """Egress processing asked on the last hop field."""


class MissingIngress(RouterDropError):
    """The step needs the interface the packet arrived on (OneHop path)."""


class RouterAlert(RouterDropError):
    """Not forwarded: a router-alert flag hands the packet to the slow path (traceroute).

    ``packet`` is the packet as the slow path sees it (the alert flag cleared)."""

    def __init__(
        self, code: int, *, packet: bytes, pointer: int = 0, egress: int = 0, cons_dir: bool = False
    ) -> None:
        super().__init__(code, pointer=pointer, egress=egress, cons_dir=cons_dir)
        self.packet = packet


_CLASSES: dict[int, type[RouterDropError]] = {
    reasons.TRUNCATED: TruncatedPacket,
    reasons.BAD_HDR_LEN: TruncatedPacket,
    reasons.BAD_PACKET_SIZE: TruncatedPacket,
    reasons.UNSUPPORTED_PATH_TYPE: UnsupportedPathType,
    reasons.MALFORMED_PATH: MalformedPath,
    reasons.BAD_CURR_INF: MalformedPath,
    reasons.BAD_CURR_HF: MalformedPath,
    reasons.EXPIRED_HOP: ExpiredHop,
    reasons.INGRESS_MISMATCH: IngressMismatch,
    reasons.INVALID_SRC_IA: InvalidAddress,
    reasons.INVALID_DST_IA: InvalidAddress,
    reasons.BAD_MAC: InvalidHopMac,
    reasons.UNKNOWN_EGRESS: UnknownEgress,
    reasons.INVALID_LINK_PAIR: InvalidRoute,
    reasons.INVALID_SEGMENT_CHANGE: InvalidRoute,
    reasons.EGRESS_DOWN: InterfaceDown,
    reasons.SIBLING_DOWN: InterfaceDown,
    reasons.PATH_AT_END: PathAtEnd,
    reasons.NO_INGRESS_IF: MissingIngress,
}


def error_for(
    code: int, *, pointer: int = 0, egress: int = 0, cons_dir: bool = False, packet: bytes = b""
) -> RouterDropError:
    """The error for a step that returned reason `code` (never OK)."""
    if code in reasons.SLOW_PATH:
        return RouterAlert(code, packet=packet, pointer=pointer, egress=egress, cons_dir=cons_dir)
    cls = _CLASSES.get(code, RouterDropError)
    return cls(code, pointer=pointer, egress=egress, cons_dir=cons_dir)
