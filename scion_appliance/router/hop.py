"""One border-router processing step on a whole SCION packet, as a plain function.

Rules kept here:
- ``process_hop(raw, hop_key, ingress=...)`` is the reference router's processing of one packet
  in one router, split the way a scionproto topology splits it between the two routers of an AS:
  ``ingress=True`` is the router where the packet enters the AS from a neighbour (it chains the
  SegID back against construction direction, verifies the MAC, performs a segment change, and
  hands the packet on inside the AS without advancing the path); ``ingress=False`` is the router
  where it leaves the AS (it verifies the MAC, chains the SegID forward in construction
  direction, and advances CurrHF/CurrINF).  These are the trace's 'ingress' and 'egress' steps.
- Expiry is checked against ``now`` (unix seconds; default: the current time), as
  ``expiry < now`` like the reference's ``expiration.Before(time.Now())``.
- Drops raise a ``RouterDropError`` subclass; nothing else is raised for any input bytes.
"""

from __future__ import annotations

import math
import time

from scion_appliance._fast import routerstep
from scion_appliance.router import reasons
from scion_appliance.router.errors import error_for


def process_hop(
    raw: bytes,
    hop_key: bytes,
    *,
    ingress: bool,
    now: float | None = None,
    ingress_ifid: int = 0,
    local_ia: int = 0,
) -> bytes:
    """The packet as it leaves one processing step; raises RouterDropError (InvalidHopMac,
    ExpiredHop, ...) when the router would not forward it.

    ``ingress_ifid`` (ingress only) is the interface the packet arrived on; 0 skips the check.
    ``local_ia`` (ISD<<48 | AS) enables the source/destination ISD-AS checks; 0 skips them and
    takes the last hop field as "destined to this AS"."""
    if len(hop_key) != 16:
        raise ValueError(f"hop-field key must be 16 bytes, got {len(hop_key)}")
    mode = routerstep.MODE_INGRESS_ONLY if ingress else routerstep.MODE_EGRESS_ALL
    step = routerstep.RouterStep(hop_key, mode=mode, local_ia=local_ia)
    t = time.time() if now is None else now
    buf = bytearray(raw)
    code, _action, egress, pointer, flags = step.step(
        buf, ingress=ingress_ifid if ingress else 0, now=max(0, math.ceil(t))
    )
    if code != reasons.OK:
        raise error_for(
            code,
            pointer=pointer,
            egress=egress,
            cons_dir=bool(flags & routerstep.F_CONSDIR),
            packet=bytes(buf),
        )
    return bytes(buf)
