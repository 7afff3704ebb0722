"""One remote appliance: its sessions (current, previous, next), its timers and when to handshake.

What this module owns: the per-peer rules of wireguard-go's ``peer.go``, ``keypair.go``, ``send.go`` and
``timers.go`` glue, sans-IO. The service layer calls a ``Peer`` method after each thing it did or saw and
does what the returned ``PeerOutput`` says; it waits until ``next_deadline()`` and then calls ``tick``.

Rules kept here (WireGuard's key rotation):
- The initiator starts using a new session at once: it becomes ``current``, the old current (or an unused
  ``next``) becomes ``previous``. The initiator must then send something (data or a keepalive) so the
  responder learns the session works.
- The responder keeps a new session as ``next`` and promotes it to ``current`` only when the first
  authenticated data arrives on it; until then it keeps sending on the old ``current``.
- ``previous`` stays receivable so packets in flight during a rekey are not lost; older ones are dropped
  and their local indexes freed at once.
- Initiations are sent at most once per REKEY_TIMEOUT (5 s) except for timer retries; a rekey is asked for
  by sending (count or age, see ``session``) and by receiving on an aging initiator session, once.
- After 3 x REJECT_AFTER_TIME without a new session every session is wiped.
- ``now`` is monotonic seconds; ``wall_time`` Unix seconds, used only for handshake timestamps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from scion_appliance.tunnel.handshake import Handshaker, HandshakeResult
from scion_appliance.tunnel.session import Session
from scion_appliance.tunnel.timers import REKEY_TIMEOUT, PeerTimers, TimerAction


@dataclass
class PeerOutput:
    """What the service must do for this peer now."""

    initiation: bytes | None = None  # send this handshake initiation to the peer
    keepalive: bool = False  # send an empty data message on ``Peer.sending_session``
    drop_queued: bool = False  # handshake attempts exhausted: drop packets waiting for a session
    expired: bool = False  # every session was wiped (the AEAD module should drop its keys too)

    def merge(self, other: PeerOutput) -> None:
        self.initiation = other.initiation or self.initiation
        self.keepalive = self.keepalive or other.keepalive
        self.drop_queued = self.drop_queued or other.drop_queued
        self.expired = self.expired or other.expired


class Peer:
    def __init__(
        self,
        public_key: bytes,
        handshaker: Handshaker,
        *,
        persistent_keepalive: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not handshaker.is_allowed(public_key):
            raise ValueError("the peer's public key is not configured in the handshaker")
        self.public_key = public_key
        self._handshaker = handshaker
        self.timers = PeerTimers(rng, persistent_keepalive)
        self.current: Session | None = None
        self.previous: Session | None = None
        self.next: Session | None = None
        self.last_initiation_sent: float | None = None
        self.last_handshake_wall_time: float | None = None  # for `status`, like `wg show`'s latest handshake
        self._sent_last_minute_handshake = False

    # --- lookups --------------------------------------------------------------------------------------------

    def sessions(self) -> list[Session]:
        return [s for s in (self.current, self.previous, self.next) if s is not None]

    def session_for_index(self, local_index: int) -> Session | None:
        for s in self.sessions():
            if s.local_index == local_index:
                return s
        return None

    def sending_session(self, now: float) -> Session | None:
        """The session to seal outgoing packets with, or None (queue them and call ``initiate``)."""
        s = self.current
        return s if s is not None and s.can_send(now) else None

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    # --- handshake ------------------------------------------------------------------------------------------

    def initiate(self, now: float, wall_time: float, *, retry: bool = False) -> bytes | None:
        """An initiation to send, or None when one went out less than REKEY_TIMEOUT ago."""
        if not retry:
            self.timers.handshake_attempts = 0
        if self.last_initiation_sent is not None and now - self.last_initiation_sent < REKEY_TIMEOUT:
            return None
        msg = self._handshaker.create_initiation(self.public_key, now=now, wall_time=wall_time)
        self.last_initiation_sent = now
        self.timers.packet_traversal(now)
        self.timers.authenticated_packet_sent(now)
        self.timers.handshake_initiated(now)
        return msg

    def established(self, result: HandshakeResult, now: float, wall_time: float) -> PeerOutput:
        """A handshake with this peer completed (either role): install its session."""
        if result.peer_public != self.public_key:
            raise ValueError("handshake result of another peer")
        session = Session(
            peer_public=result.peer_public,
            local_index=result.local_index,
            remote_index=result.remote_index,
            send_key=result.send_key,
            receive_key=result.receive_key,
            created=now,
            initiator=result.initiator,
        )
        self.last_handshake_wall_time = wall_time
        self.timers.session_derived(now)
        old = self.sessions()
        if result.initiator:
            # An unconfirmed ``next`` is newer than ``current``: it is the one worth keeping receivable.
            self.previous = self.next if self.next is not None else self.current
            self.current, self.next = session, None
            self._drop_unreferenced(old)
            self._sent_last_minute_handshake = False
            self.timers.handshake_completed(now)
            return PeerOutput(keepalive=True)  # confirms the session to the responder
        self.next, self.previous = session, None
        self._drop_unreferenced(old)
        self.timers.packet_traversal(now)
        self.timers.authenticated_packet_sent(now)  # the response the service sends now
        return PeerOutput()

    def _drop_unreferenced(self, sessions: list[Session]) -> None:
        kept = self.sessions()
        for s in sessions:
            if not any(s is k for k in kept):
                s.wipe()
                self._handshaker.index_table.free(s.local_index)

    # --- data -----------------------------------------------------------------------------------------------

    def sent(self, session: Session, now: float, wall_time: float, *, keepalive: bool = False) -> PeerOutput:
        """Packets were sealed with ``session`` and sent (call once per batch)."""
        self.timers.packet_traversal(now)
        self.timers.authenticated_packet_sent(now)
        if not keepalive:
            self.timers.data_sent(now)
        out = PeerOutput()
        if session is self.current and session.needs_rekey(now):
            out.initiation = self.initiate(now, wall_time)
        return out

    def received(self, session: Session, now: float, wall_time: float, *, keepalive: bool) -> PeerOutput:
        """A packet opened and passed the replay window on ``session`` (call once per batch)."""
        out = PeerOutput()
        if session is self.next:
            old = self.sessions()
            self.previous, self.current, self.next = self.current, session, None
            self._drop_unreferenced(old)
            self.timers.handshake_completed(now)
        self.timers.packet_traversal(now)
        self.timers.authenticated_packet_received(now)
        if not keepalive:
            self.timers.data_received(now)
        if (
            session is self.current
            and session.needs_rekey_on_receive(now)
            and not self._sent_last_minute_handshake
        ):
            self._sent_last_minute_handshake = True
            out.initiation = self.initiate(now, wall_time)
        return out

    # --- time -----------------------------------------------------------------------------------------------

    def tick(self, now: float, wall_time: float) -> PeerOutput:
        out = PeerOutput()
        for action in self.timers.tick(now):
            if action is TimerAction.RETRY_INITIATION:
                out.initiation = self.initiate(now, wall_time, retry=True) or out.initiation
            elif action is TimerAction.SEND_INITIATION:
                out.initiation = self.initiate(now, wall_time) or out.initiation
            elif action is TimerAction.SEND_KEEPALIVE:
                if self.sending_session(now) is not None:
                    out.keepalive = True
                else:
                    out.initiation = self.initiate(now, wall_time) or out.initiation
            elif action is TimerAction.GIVE_UP:
                out.drop_queued = True
                self._handshaker.cancel(self.public_key)
            elif action is TimerAction.EXPIRE_SESSIONS:
                self.expire()
                out.expired = True
        return out

    def expire(self) -> None:
        """Wipe every session and any pending handshake (key material gone; a new handshake is needed)."""
        old = self.sessions()
        self.current = self.previous = self.next = None
        self._drop_unreferenced(old)
        self._handshaker.cancel(self.public_key)

    def stop(self) -> None:
        """The peer is being removed from the configuration."""
        self.expire()
        self.timers.stop()
