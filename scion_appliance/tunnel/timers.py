"""WireGuard's protocol timers and a sans-IO per-peer timer machine.

What this module owns: the timing constants of the tunnel (the values of the WireGuard whitepaper, section
6.1, and wireguard-go's ``device/constants.go``) and ``PeerTimers``, the five per-peer timers of
wireguard-go's ``timers.go`` without goroutines: events come in as method calls with the current monotonic
time, ``tick(now)`` returns what is due, and ``next_deadline()`` says when to call ``tick`` again.

Rules kept here:
- No clock is read here: every method takes ``now`` (seconds, monotonic).
- Jitter of handshake retries and rekeys comes from an injectable ``random.Random`` so tests are exact.
- A retransmitted initiation is sent at most ``MAX_TIMER_HANDSHAKES`` times after the first (90 s of
  retrying at 5 s), then the peer gives up until new traffic asks for a handshake again.
"""

from __future__ import annotations

import random
from enum import Enum

REKEY_AFTER_MESSAGES = 2**60
REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
REKEY_TIMEOUT_JITTER_MAX = 1.0 / 3.0
KEEPALIVE_TIMEOUT = 10.0
COOKIE_REFRESH_TIME = 120.0
HANDSHAKE_INITIATION_RATE = 1.0 / 50.0  # a responder consumes at most one initiation per peer per 20 ms
MAX_TIMER_HANDSHAKES = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # 18
# An initiator whose current session is this old refreshes it on receipt, before the responder's REJECT.
REKEY_ON_RECEIVE_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT


class TimerAction(Enum):
    """What the service layer must do for a peer."""

    SEND_INITIATION = "send_initiation"  # start a handshake: we sent data and heard nothing back
    RETRY_INITIATION = "retry_initiation"  # no response to our initiation within REKEY_TIMEOUT: send another
    SEND_KEEPALIVE = "send_keepalive"  # an empty data message on the current session
    EXPIRE_SESSIONS = "expire_sessions"  # forget every session's key material (nothing heard for 540 s)
    GIVE_UP = "give_up"  # handshake retries exhausted: drop packets queued for this peer


_RETRANSMIT = "retransmit_handshake"
_KEEPALIVE = "send_keepalive"
_NEW_HANDSHAKE = "new_handshake"
_ZERO_KEYS = "zero_key_material"
_PERSISTENT = "persistent_keepalive"


class PeerTimers:
    """The timers of one peer. Call the event methods as things happen, ``tick`` when a deadline passes."""

    def __init__(self, rng: random.Random | None = None, persistent_keepalive: float = 0.0) -> None:
        self._rng = rng if rng is not None else random.SystemRandom()
        self.persistent_keepalive = persistent_keepalive
        self._deadlines: dict[str, float] = {}
        self.handshake_attempts = 0
        self._need_another_keepalive = False

    def _jitter(self) -> float:
        return self._rng.uniform(0.0, REKEY_TIMEOUT_JITTER_MAX)

    def pending(self, name: str) -> bool:
        return name in self._deadlines

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    # --- events (wireguard-go timers.go: timersXxx) --------------------------------------------------------

    def data_sent(self, now: float) -> None:
        """A data packet with payload went out: expect an answer within keepalive + rekey timeout."""
        if _NEW_HANDSHAKE not in self._deadlines:
            self._deadlines[_NEW_HANDSHAKE] = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()

    def data_received(self, now: float) -> None:
        """A data packet with payload came in: answer with a keepalive if we have nothing to send."""
        if _KEEPALIVE not in self._deadlines:
            self._deadlines[_KEEPALIVE] = now + KEEPALIVE_TIMEOUT
        else:
            self._need_another_keepalive = True

    def authenticated_packet_sent(self, now: float) -> None:
        """Anything authenticated went out (data, keepalive, handshake): no separate keepalive needed."""
        self._deadlines.pop(_KEEPALIVE, None)

    def authenticated_packet_received(self, now: float) -> None:
        """Anything authenticated came in: the peer is alive, no need for a new handshake."""
        self._deadlines.pop(_NEW_HANDSHAKE, None)

    def packet_traversal(self, now: float) -> None:
        """Any authenticated packet sent or received: restart the persistent keepalive interval."""
        if self.persistent_keepalive > 0:
            self._deadlines[_PERSISTENT] = now + self.persistent_keepalive

    def handshake_initiated(self, now: float) -> None:
        """An initiation went out: retry after REKEY_TIMEOUT plus jitter unless a response arrives."""
        self._deadlines[_RETRANSMIT] = now + REKEY_TIMEOUT + self._jitter()

    def handshake_completed(self, now: float) -> None:
        self._deadlines.pop(_RETRANSMIT, None)
        self.handshake_attempts = 0

    def session_derived(self, now: float) -> None:
        """New keys exist: wipe everything if nothing renews them within three REJECT_AFTER_TIMEs."""
        self._deadlines[_ZERO_KEYS] = now + REJECT_AFTER_TIME * 3

    def stop(self) -> None:
        self._deadlines.clear()
        self._need_another_keepalive = False
        self.handshake_attempts = 0

    # --- expiry ---------------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[TimerAction]:
        """Fire every timer whose deadline is at or before ``now``; return the actions in firing order."""
        actions: list[TimerAction] = []
        due = sorted((t, name) for name, t in self._deadlines.items() if t <= now)
        for _, name in due:
            if self._deadlines.get(name, now + 1) > now:
                continue  # cleared or moved by an earlier action in this tick
            del self._deadlines[name]
            actions.extend(self._fire(name, now))
        return actions

    def _fire(self, name: str, now: float) -> list[TimerAction]:
        if name == _RETRANSMIT:
            if self.handshake_attempts >= MAX_TIMER_HANDSHAKES:
                self.handshake_attempts = 0
                self._deadlines.pop(_KEEPALIVE, None)
                if _ZERO_KEYS not in self._deadlines:
                    self._deadlines[_ZERO_KEYS] = now + REJECT_AFTER_TIME * 3
                return [TimerAction.GIVE_UP]
            self.handshake_attempts += 1
            # Re-armed here too so retries go on even if the caller's send was suppressed.
            self._deadlines[_RETRANSMIT] = now + REKEY_TIMEOUT + self._jitter()
            return [TimerAction.RETRY_INITIATION]
        if name == _KEEPALIVE:
            if self._need_another_keepalive:
                self._need_another_keepalive = False
                self._deadlines[_KEEPALIVE] = now + KEEPALIVE_TIMEOUT
            return [TimerAction.SEND_KEEPALIVE]
        if name == _NEW_HANDSHAKE:
            return [TimerAction.SEND_INITIATION]
        if name == _ZERO_KEYS:
            return [TimerAction.EXPIRE_SESSIONS]
        # _PERSISTENT
        return [TimerAction.SEND_KEEPALIVE]
