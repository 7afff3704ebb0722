"""A session: one pair of transport keys from one handshake, with its indexes, age and send counter.

What this module owns: the lifetime rules of a session (WireGuard's "keypair"): when it should be
replaced and when it must no longer be used. Sealing and opening are the AEAD module's job; a session only
hands it the key bytes and the counters to use.

Rules kept here:
- Send counters start at 0 and are handed out once (``reserve``): no (key, nonce) pair is ever used twice.
  A session is never restored from disk; after a restart keys come from a fresh handshake.
- Rekey (start a new handshake) when the send counter reaches REKEY_AFTER_MESSAGES, or, on the side that
  initiated the handshake, when the session is REKEY_AFTER_TIME old (only the initiator, so both sides do
  not start one at once).
- Reject after REJECT_AFTER_TIME or at REJECT_AFTER_MESSAGES counters, sending and receiving alike.
- ``now`` is monotonic seconds, passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scion_appliance.tunnel.timers import (
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ON_RECEIVE_AGE,
)


@dataclass(eq=False)
class Session:
    peer_public: bytes
    local_index: int  # the receiver index the peer writes into data messages sent to us
    remote_index: int  # the receiver index we write into data messages sent to the peer
    send_key: bytes = field(repr=False)
    receive_key: bytes = field(repr=False)
    created: float
    initiator: bool
    send_counter: int = 0  # the next counter to hand out
    expired: bool = False

    def age(self, now: float) -> float:
        return now - self.created

    def can_send(self, now: float) -> bool:
        return (
            not self.expired
            and self.send_counter < REJECT_AFTER_MESSAGES
            and now - self.created < REJECT_AFTER_TIME
        )

    def can_receive(self, now: float, counter: int | None = None) -> bool:
        if self.expired or now - self.created >= REJECT_AFTER_TIME:
            return False
        return counter is None or counter < REJECT_AFTER_MESSAGES

    def reserve(self, n: int, now: float) -> range:
        """Counters for the next ``n`` packets; shorter (possibly empty) when the session runs out."""
        if n < 0:
            raise ValueError("a negative number of counters")
        if not self.can_send(now):
            return range(0)
        start = self.send_counter
        stop = min(start + n, REJECT_AFTER_MESSAGES)
        self.send_counter = stop
        return range(start, stop)

    def needs_rekey(self, now: float) -> bool:
        """After sending: time to start a new handshake (WireGuard's keepKeyFreshSending)."""
        if self.send_counter >= REKEY_AFTER_MESSAGES:
            return True
        return self.initiator and now - self.created >= REKEY_AFTER_TIME

    def needs_rekey_on_receive(self, now: float) -> bool:
        """After receiving: an initiator whose session nears REJECT refreshes it (keepKeyFreshReceiving)."""
        return self.initiator and now - self.created >= REKEY_ON_RECEIVE_AGE

    def wipe(self) -> None:
        """Forget the keys. Python cannot scrub immutable bytes; the AEAD module wipes its own copies."""
        self.send_key = b""
        self.receive_key = b""
        self.expired = True
