"""The border router: path processing (hop), its reason codes and errors."""

from scion_appliance.router.errors import (
    ExpiredHop,
    IngressMismatch,
    InterfaceDown,
    InvalidAddress,
    InvalidHopMac,
    InvalidRoute,
    MalformedPath,
    MissingIngress,
    PathAtEnd,
    RouterAlert,
    RouterDropError,
    TruncatedPacket,
    UnknownEgress,
    UnsupportedPathType,
)
from scion_appliance.router.hop import process_hop

__all__ = [
    "ExpiredHop",
    "IngressMismatch",
    "InterfaceDown",
    "InvalidAddress",
    "InvalidHopMac",
    "InvalidRoute",
    "MalformedPath",
    "MissingIngress",
    "PathAtEnd",
    "RouterAlert",
    "RouterDropError",
    "TruncatedPacket",
    "UnknownEgress",
    "UnsupportedPathType",
    "process_hop",
]
