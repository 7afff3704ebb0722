"""Path quality: what the probes (and the data) tell about one path, and its up/degraded/down state.

Rules kept here:
- Sans-IO and clock-free: every event carries ``now``, monotonic seconds from the caller's clock.
- Probes are matched by id. A probe unanswered after the probe timeout (RFC 6298 style:
  SRTT + 4 RTTVAR, clamped) counts as lost when ``expire(now)`` runs; a reply arriving after that
  still proves the path delivers (last seen, liveness) and feeds the timeout estimate, but the probe
  stays counted as lost.
- RTT: EWMA with ``ewma_alpha`` (default 1/8), p95 over the last ``rtt_window`` samples (nearest
  rank), and a fast "recent" value, the median of the last ``recent_samples`` samples. The score a
  selector compares, ``rtt``, is the larger of EWMA and recent: a path that got worse shows it after
  two samples, one that got better must prove it for longer (asymmetry against flapping).
- Jitter as RFC 3550 section 6.4.1: J += (|D| - J) / 16 with D the difference of successive RTTs.
- Loss: the share of lost probes among the last ``loss_window`` probe outcomes, or the data loss when
  that is higher. Data loss comes from acknowledgements (``paths.acks``): the messages sent on the path
  against the far end's running count of those it received, over the last ``data_window`` seconds,
  once at least ``data_loss_min_sent`` were sent in it (so an idle path falls back to its probes).
- Data RTT: the median of the last ``data_rtt_samples`` acked round trips of the last ``data_window``
  seconds. It is kept apart from the probe RTT (data also crosses the far gateway, so the two are not
  comparable between paths); selection uses it to see a path slowing down before its probes do.
- State: DOWN after ``down_after_lost`` consecutive lost probes, or at once on an SCMP
  external-interface-down / internal-connectivity-down notice for the path; back from DOWN only after
  ``up_after_answers`` consecutive answers. Otherwise DEGRADED while the last probe was lost, loss
  exceeds ``degraded_loss``, or the path is suspect; else UP.
- Data-plane liveness: a path that carried data and got nothing back (no ack; no probe reply either,
  unless acks have been seen on the path and data is still flowing) for its liveness timeout since
  the first such send is *suspect*. The timeout adapts to the path: the data
  round trip as acks measure it (probes until then), RFC 6298 style SRTT + 4 RTTVAR, plus
  ``answer_delay`` (how long the far end may hold its answer back: its ack interval), never below
  ``liveness_timeout``. It relies on the far end answering data (acks); until the path has seen one
  (or the caller says the far end acks, ``far_end_acks``), the floor is ``liveness_timeout_without_acks``, which must exceed the probe interval plus the RTT,
  or an idle return direction makes healthy paths suspect.
- Bounded memory: fixed windows, at most ``max_outstanding`` probes in flight per path.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any


class PathState(enum.StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


class DownNotice(enum.StrEnum):
    """SCMP messages that declare a path dead (SCMP types 5 and 6)."""

    EXTERNAL_INTERFACE_DOWN = "SCMP external interface down"
    INTERNAL_CONNECTIVITY_DOWN = "SCMP internal connectivity down"


@dataclass(frozen=True, slots=True)
class QualityConfig:
    ewma_alpha: float = 1 / 8
    rtt_window: int = 64
    recent_samples: int = 3
    loss_window: int = 10
    down_after_lost: int = 3
    up_after_answers: int = 3
    degraded_loss: float = 0.0
    probe_timeout_initial: float = 1.0
    probe_timeout_min: float = 0.05
    probe_timeout_max: float = 2.0
    liveness_timeout: float = 0.08  # floor of the adaptive liveness timeout
    # Before the far end has acked anything on the path only probe answers come back: then the floor
    # must exceed the probe interval plus the RTT.
    liveness_timeout_without_acks: float = 0.25
    answer_delay: float = 0.0
    data_window: float = 0.2  # short: a loss that starts shows within ~100 ms, not diluted by the past
    data_loss_min_sent: int = 16
    data_rtt_samples: int = 5
    max_outstanding: int = 64

    def __post_init__(self) -> None:
        if not 0.0 < self.ewma_alpha <= 1.0:
            raise ValueError(f"ewma_alpha {self.ewma_alpha} must be in (0, 1]")
        for name in (
            "rtt_window",
            "recent_samples",
            "loss_window",
            "down_after_lost",
            "up_after_answers",
            "data_rtt_samples",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0.0 <= self.degraded_loss < 1.0:
            raise ValueError(f"degraded_loss {self.degraded_loss} must be in [0, 1)")
        if not 0.0 < self.probe_timeout_min <= self.probe_timeout_max:
            raise ValueError("probe timeouts need 0 < probe_timeout_min <= probe_timeout_max")
        if self.liveness_timeout <= 0.0:
            raise ValueError("liveness_timeout must be positive")
        if self.answer_delay < 0.0 or self.data_window <= 0.0 or self.data_loss_min_sent < 1:
            raise ValueError("answer_delay >= 0, data_window > 0 and data_loss_min_sent >= 1 needed")


@dataclass(frozen=True, slots=True)
class QualitySnapshot:
    """The quality of a path at one instant; RTTs in seconds, ``None`` before the first sample."""

    state: PathState
    reason: str  # why the state is what it is, for the operator ("3 probes lost in a row")
    rtt: float | None
    rtt_ewma: float | None
    rtt_recent: float | None
    rtt_p95: float | None
    jitter: float
    loss: float  # the larger of probe loss and data loss: what selection judges
    samples: int
    probes_sent: int
    probes_lost: int
    last_seen: float | None
    suspect: bool
    consecutive_lost: int
    consecutive_answers: int
    data_loss: float | None = None  # from acknowledgements; None without enough recent data
    proven_at: float | None = None  # send time of the latest completed round trip (probe or acked data)
    data_rtt: float | None = None  # recent acked data round trips (median); None without recent acks
    probe_loss: float = 0.0

    @property
    def measured(self) -> bool:
        return self.samples > 0

    @property
    def usable(self) -> bool:
        return self.state is not PathState.DOWN


def _fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class PathQuality:
    """Probe statistics and state of one path."""

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()
        c = self.config
        self._outstanding: OrderedDict[int, float] = OrderedDict()  # probe id -> sent at
        self._expired: OrderedDict[int, float] = OrderedDict()  # lost probes, for late replies
        self._samples: deque[float] = deque(maxlen=c.rtt_window)
        self._outcomes: deque[bool] = deque(maxlen=c.loss_window)  # True = answered
        self.rtt_ewma: float | None = None
        self._rttvar: float = 0.0
        self.jitter = 0.0
        self._last_rtt: float | None = None
        self.samples = 0
        self.probes_sent = 0
        self.probes_lost = 0
        self.late_replies = 0
        self.consecutive_lost = 0
        self.consecutive_answers = 0
        self.probes_lost_run = 0  # length of the loss run that took the path down
        self.last_seen: float | None = None
        # When the latest round trip known to have completed began (an answered probe, acked data):
        # the path delivered at least until then.
        self.proven_at: float | None = None
        self._srtt: float | None = None  # RFC 6298 smoothed RTT, for the probe timeout only
        self._down = False
        self._down_reason = ""  # set with _down; empty when the cause is lost probes
        self._unanswered_since: float | None = None  # first data send since the last thing received
        self._last_data_sent = -math.inf
        self._ack_srtt: float | None = None  # data round trip as acks measure it (RFC 6298)
        self._ack_rttvar = 0.0
        # (sent seq, far end's received count, when) of the last ack
        self._ack_base: tuple[int, int, float] | None = None
        self._data: deque[tuple[float, int, int]] = deque(maxlen=64)  # (ack time, sent, received) deltas
        self._ack_rtts: deque[tuple[float, float]] = deque(maxlen=c.data_rtt_samples)  # (ack time, rtt)
        self.acks = 0
        # The far end is known to ack (it did on another path): this path's data will be acked too.
        self.far_end_acks = False

    # -- events --------------------------------------------------------------------------------------

    def probe_sent(self, probe_id: int, now: float) -> None:
        self.probes_sent += 1
        self._outstanding.pop(probe_id, None)
        self._outstanding[probe_id] = now
        if len(self._outstanding) > self.config.max_outstanding:
            old_id, sent = self._outstanding.popitem(last=False)
            self._lose(old_id, sent)

    def probe_reply(self, probe_id: int, now: float) -> float | None:
        """Record the answer to probe ``probe_id``; returns its RTT, or None for an unknown id."""
        sent = self._outstanding.pop(probe_id, None)
        if sent is None:
            sent = self._expired.pop(probe_id, None)
            if sent is None:
                return None  # never sent, or answered twice: nothing to learn
            self.late_replies += 1
            rtt = max(0.0, now - sent)
            self._update_timeout_estimate(rtt)
            self._received(now, sent, data=False)
            return rtt
        rtt = max(0.0, now - sent)
        self._update_timeout_estimate(rtt)
        self._samples.append(rtt)
        self.samples += 1
        if self._last_rtt is not None:
            self.jitter += (abs(rtt - self._last_rtt) - self.jitter) / 16.0
        self._last_rtt = rtt
        a = self.config.ewma_alpha
        self.rtt_ewma = rtt if self.rtt_ewma is None else (1 - a) * self.rtt_ewma + a * rtt
        self._outcomes.append(True)
        self.consecutive_lost = 0
        self.consecutive_answers += 1
        if self._down and self.consecutive_answers >= self.config.up_after_answers:
            self._down = False
            self._down_reason = ""
            self.probes_lost_run = 0
        self._received(now, sent, data=False)
        return rtt

    def expire(self, now: float) -> int:
        """Count probes older than the probe timeout as lost; returns how many were."""
        timeout = self.probe_timeout()
        lost = 0
        while self._outstanding:
            probe_id, sent = next(iter(self._outstanding.items()))
            if now - sent < timeout:
                break
            del self._outstanding[probe_id]
            self._lose(probe_id, sent)
            lost += 1
        return lost

    def scmp_down(self, notice: DownNotice, detail: str = "") -> None:
        """An SCMP error said the path is broken (e.g. "1-ff00:0:110 interface 5"): down at once."""
        self._down = True
        self._down_reason = f"{notice}" + (f" ({detail})" if detail else "")
        self.consecutive_answers = 0

    def data_sent(self, now: float) -> None:
        self._last_data_sent = now
        if self._unanswered_since is None:
            self._unanswered_since = now

    def data_received(self, now: float) -> None:
        self._received(now)

    def data_acked(self, now: float, sent_seq: int, received: int, rtt: float | None = None) -> None:
        """The far end acknowledged a data message sent on this path: ``sent_seq`` is our running count
        of messages sent on the path up to that one, ``received`` the far end's running count (mod 2^32)
        of those it got, ``rtt`` the message's round trip."""
        self.acks += 1
        self._received(now, now - rtt if rtt is not None and rtt >= 0.0 else None)
        if rtt is not None and rtt >= 0.0:
            self._ack_rtts.append((now, rtt))
            if self._ack_srtt is None:
                self._ack_srtt, self._ack_rttvar = rtt, rtt / 2
            else:
                self._ack_rttvar = 0.75 * self._ack_rttvar + 0.25 * abs(self._ack_srtt - rtt)
                self._ack_srtt = 0.875 * self._ack_srtt + 0.125 * rtt
        base = self._ack_base
        # A baseline older than the data window would charge this sample with losses long past (the
        # path carried no data for a while, e.g. traffic comes back to it): start over instead.
        if base is not None and now - base[2] <= self.config.data_window:
            d_sent = sent_seq - base[0]
            if d_sent <= 0:
                return  # an older ack overtaken by a newer one: nothing new
            d_recv = (received - base[1]) & 0xFFFFFFFF
            # A little more received than sent is reordering across the ack; much more is a restarted
            # count on the far end (a forgotten path): start over from this ack.
            if d_recv <= d_sent + 64:
                self._data.append((now, d_sent, d_recv))
        self._ack_base = (sent_seq, received, now)

    # -- derived values ------------------------------------------------------------------------------

    def probe_timeout(self) -> float:
        c = self.config
        base = c.probe_timeout_initial if self._srtt is None else self._srtt + 4 * self._rttvar
        return min(max(base, c.probe_timeout_min), c.probe_timeout_max)

    @property
    def loss(self) -> float:
        """Probe loss over the probe window (``data_loss`` is the other half of what ``snapshot`` says)."""
        if not self._outcomes:
            return 0.0
        return self._outcomes.count(False) / len(self._outcomes)

    def data_loss(self, now: float) -> float | None:
        c = self.config
        sent = received = 0
        for t, s, r in reversed(self._data):
            if now - t > c.data_window:
                break
            sent += s
            received += r
        if sent < c.data_loss_min_sent:
            return None
        return min(1.0, max(0.0, 1.0 - received / sent))

    def data_rtt(self, now: float) -> float | None:
        recent = sorted(r for t, r in self._ack_rtts if now - t <= self.config.data_window)
        if not recent:
            return None
        mid = len(recent) // 2
        return recent[mid] if len(recent) % 2 else (recent[mid - 1] + recent[mid]) / 2

    def combined_loss(self, now: float) -> float:
        dl = self.data_loss(now)
        return self.loss if dl is None else max(self.loss, dl)

    def liveness_timeout(self) -> float:
        """How long data may go unanswered before the path is suspect (see the module rules)."""
        c = self.config
        if self._ack_srtt is None:
            rto = self.probe_timeout()
        else:
            rto = min(max(self._ack_srtt + 4 * self._ack_rttvar, c.probe_timeout_min), c.probe_timeout_max)
        acking = self.acks or self.far_end_acks
        floor = c.liveness_timeout if acking else max(c.liveness_timeout, c.liveness_timeout_without_acks)
        return max(floor, rto + c.answer_delay)

    @property
    def rtt_recent(self) -> float | None:
        if not self._samples:
            return None
        k = min(self.config.recent_samples, len(self._samples))
        recent = sorted(list(self._samples)[-k:])
        mid = len(recent) // 2
        return recent[mid] if k % 2 else (recent[mid - 1] + recent[mid]) / 2

    @property
    def rtt_p95(self) -> float | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    @property
    def rtt(self) -> float | None:
        recent = self.rtt_recent
        if self.rtt_ewma is None or recent is None:
            return self.rtt_ewma
        return max(self.rtt_ewma, recent)

    @property
    def is_down(self) -> bool:
        return self._down

    def suspect(self, now: float) -> bool:
        since = self._unanswered_since
        return since is not None and now - since >= self.liveness_timeout()

    def state(self, now: float) -> tuple[PathState, str]:
        c = self.config
        if self._down:
            reason = self._down_reason or f"{self.probes_lost_run} probes lost in a row"
            if self.consecutive_answers:
                reason += f"; {self.consecutive_answers} of {c.up_after_answers} answers needed to come back"
            return PathState.DOWN, reason
        if self.suspect(now):
            assert self._unanswered_since is not None
            silent = now - self._unanswered_since
            return PathState.DEGRADED, f"suspect: data sent, nothing back for {_fmt_ms(silent)}"
        if self.consecutive_lost:
            return PathState.DEGRADED, f"{self.consecutive_lost} probe(s) lost in a row"
        data_loss = self.data_loss(now)
        if data_loss is not None and data_loss > c.degraded_loss and data_loss >= self.loss:
            return PathState.DEGRADED, f"data loss {data_loss:.0%} over the last {c.data_window:g} s"
        loss = self.loss
        if loss > c.degraded_loss:
            return PathState.DEGRADED, f"loss {loss:.0%} over the last {len(self._outcomes)} probes"
        if not self.samples:
            return PathState.UP, "no probe answered yet"
        return PathState.UP, "answering probes"

    def snapshot(self, now: float) -> QualitySnapshot:
        state, reason = self.state(now)
        data_loss = self.data_loss(now)
        return QualitySnapshot(
            state=state,
            reason=reason,
            rtt=self.rtt,
            rtt_ewma=self.rtt_ewma,
            rtt_recent=self.rtt_recent,
            rtt_p95=self.rtt_p95,
            jitter=self.jitter,
            loss=self.loss if data_loss is None else max(self.loss, data_loss),
            samples=self.samples,
            probes_sent=self.probes_sent,
            probes_lost=self.probes_lost,
            last_seen=self.last_seen,
            suspect=self.suspect(now),
            consecutive_lost=self.consecutive_lost,
            consecutive_answers=self.consecutive_answers,
            data_loss=data_loss,
            probe_loss=self.loss,
            proven_at=self.proven_at,
            data_rtt=self.data_rtt(now),
        )

    # -- persistence (the state store keeps one JSON record per path) ------------------------------------

    def export(self) -> dict[str, Any]:
        """A JSON-safe record of the statistics. Times are left out: monotonic clocks restart with
        the process. A path that was down stays down after a restart until it answers again."""
        return {
            "v": 1,
            "rtt_ewma": self.rtt_ewma,
            "srtt": self._srtt,
            "rttvar": self._rttvar,
            "jitter": self.jitter,
            "samples": list(self._samples),
            "outcomes": [int(o) for o in self._outcomes],
            "n_samples": self.samples,
            "probes_sent": self.probes_sent,
            "probes_lost": self.probes_lost,
            "down": self._down,
            "down_reason": self.state(0.0)[1] if self._down else "",
        }

    @classmethod
    def restore(cls, record: dict[str, Any], config: QualityConfig | None = None) -> PathQuality:
        """Rebuild from ``export()``; a record that does not parse gives a fresh, unmeasured path."""
        q = cls(config)
        try:
            if record.get("v") != 1:
                return q
            samples = [float(x) for x in record["samples"] if _finite_nonneg(x)]
            q._samples.extend(samples)
            q._outcomes.extend(bool(x) for x in record["outcomes"])
            ewma = record["rtt_ewma"]
            q.rtt_ewma = float(ewma) if _finite_nonneg(ewma) else None
            srtt = record["srtt"]
            q._srtt = float(srtt) if _finite_nonneg(srtt) else None
            q._rttvar = float(record["rttvar"]) if _finite_nonneg(record["rttvar"]) else 0.0
            q.jitter = float(record["jitter"]) if _finite_nonneg(record["jitter"]) else 0.0
            q._last_rtt = samples[-1] if samples else None
            q.samples = max(int(record["n_samples"]), len(samples))
            q.probes_sent = max(0, int(record["probes_sent"]))
            q.probes_lost = max(0, int(record["probes_lost"]))
            if record["down"]:
                q._down = True
                q._down_reason = f"down before restart: {record['down_reason']}"
        except (KeyError, TypeError, ValueError):
            return cls(config)
        return q

    # -- internals -----------------------------------------------------------------------------------

    def _update_timeout_estimate(self, rtt: float) -> None:
        # RFC 6298: RTTVAR first, with the old SRTT; beta 1/4, alpha 1/8.
        if self._srtt is None:
            self._srtt = rtt
            self._rttvar = rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt

    def _lose(self, probe_id: int, sent: float) -> None:
        self.probes_lost += 1
        self._outcomes.append(False)
        self.consecutive_lost += 1
        self.consecutive_answers = 0
        self._expired[probe_id] = sent
        if len(self._expired) > self.config.max_outstanding:
            self._expired.popitem(last=False)
        if self.consecutive_lost >= self.config.down_after_lost and not self._down:
            self._down = True
            self._down_reason = ""
        if self._down and not self._down_reason:
            self.probes_lost_run = max(self.probes_lost_run, self.consecutive_lost)

    def _received(self, now: float, sent: float | None = None, *, data: bool = True) -> None:
        self.last_seen = now if self.last_seen is None else max(self.last_seen, now)
        if sent is not None:
            self.proven_at = sent if self.proven_at is None else max(self.proven_at, sent)
        # Once the far end is known to ack, data liveness is about data: a probe answer does not
        # clear it while data is flowing (probes may pass where data does not: MTU, a filter, a dead
        # far gateway behind a live router), only once the path has been idle past the timeout.
        acking = self.acks or self.far_end_acks
        if data or not acking or now - self._last_data_sent > self.liveness_timeout():
            self._unanswered_since = None


def _finite_nonneg(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
