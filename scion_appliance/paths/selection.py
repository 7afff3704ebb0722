"""Path selection: which candidate path carries the traffic to a remote AS, and why.

Rules kept here:
- Sans-IO and clock-free: the caller passes the candidates with their quality snapshots and ``now``.
  Each decision returns the path and a reason the operator can read in status.
- Never a down path: a path whose quality state is DOWN (lost probes, SCMP interface down) is never
  returned, not for the active choice, nor for exploration or a flow slot. When every path is down
  (or excluded) the answer is ``None`` with the reason.
- Ranking (best first): healthy measured paths; then paths not yet measured; then paths with a
  problem (suspect, loss above ``failover_loss_threshold``, RTT above ``failover_rtt_threshold`` x the
  lowest healthy RTT by more than twice the path's jitter (noise is not degradation: with short RTTs
  on a busy host, a few ms of scheduling delay make a 1.5x ratio), or data slower than its own
  probes: acked data RTT above ``failover_rtt_threshold`` x the path's probe RTT + ``data_rtt_slack``,
  which shows a slowdown before the probes do). Within a tier: recently failed paths that have not
  yet proven themselves for their recovery hold come last, paths crossing a preferred AS come first,
  then the metric (lowest RTT by default, or fewest hops), then the path id for determinism.
- Failover is immediate when the active path is down, withdrawn, excluded, or has a problem while a
  path without one exists. When the active path failed on its own (down, suspect: data unanswered,
  lossy, data slower than its probes) the fault is often on a link shared by the next paths in the
  ranking, and their probes have not told yet. So the successor is chosen by, in order: no problem
  of its own; not fallen lately (not recovering); the best tier; fresh evidence of life (a round
  trip that began after the failed path's last one that completed); the fewest interfaces shared
  with the failed path; the usual ranking. A later voluntary switch (with its hysteresis) moves to
  the best path once it has proven itself. A path whose only problem is a worse RTT is not left for
  one that is still recovering from a failure (that would be the first half of a flap).
- Any other switch (a better path appeared, a failed path recovered) needs both: the new path is
  better by the margin (``switch_margin`` relative and ``switch_margin_abs`` seconds, the two added),
  and the current choice has been held for ``min_dwell`` seconds. A path that failed must stay
  healthy for its recovery hold (``min_dwell`` doubled per failure in a row, at most
  ``max_recovery_hold``) before it can win a voluntary switch again: no flapping on a path that keeps
  failing.
- Shared risk: when two or more paths fell into a problem of their own (down, suspect, lossy, ...)
  within ``shared_risk_window`` seconds and have not recovered (for their recovery hold), the
  interfaces they all cross are the likely fault; any other path crossing one of them ranks with the
  problem paths until those recover (so traffic skips the paths that share the broken link instead
  of trying them one by one). The active path is exempt: its own data and probes outweigh the
  inference, so a shared risk never moves a working path.
- A pinned path wins while it is not down (and not excluded); otherwise selection proceeds normally
  and the reason says why the pin is not honoured.
- Exploration: with probability ``exploration_probability`` a batch goes on another healthy
  candidate (RNG injectable). Never while pinned.
- Spreading (``spread_paths`` > 1): flows map to slots by a 5-tuple hash; each slot holds a path and
  keeps it while that path is healthy, so a flow stays on its path until the path fails. A freed slot
  takes the best healthy path not already in a slot.
- ``min_paths``: when fewer usable paths remain, every reason says so and ``Decision.short_of_paths``
  is set, so the service can fetch more paths from its source.
"""

from __future__ import annotations

import enum
import math
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from scion_appliance.paths.quality import PathState, QualitySnapshot
from scion_appliance.paths.source import PathInfo, PathInterface


class Metric(enum.StrEnum):
    LATENCY = "latency"
    HOPS = "hops"


@dataclass(frozen=True, slots=True)
class SelectionPolicy:
    """Operator policy and the failover knobs of the appliance configuration (times in seconds)."""

    metric: Metric = Metric.LATENCY
    preferred_ases: frozenset[str] = frozenset()
    excluded_ases: frozenset[str] = frozenset()
    pinned_path: str | None = None  # a path id, or a unique prefix of one (status shows 8 characters)
    failover_rtt_threshold: float = 1.5  # active RTT above this factor x the best RTT: fail over
    failover_loss_threshold: float = 0.1  # active probe loss above this share: fail over
    min_paths: int = 2
    exploration_probability: float = 0.0
    switch_margin: float = 0.1
    switch_margin_abs: float = 0.002
    min_dwell: float = 2.0
    max_recovery_hold: float = 60.0
    shared_risk_window: float = 5.0  # how long failed paths cast suspicion on what they share (0: off)
    spread_paths: int = 1
    # Data crosses the far gateway (a busy process) too: its RTT may exceed the probes' by this much.
    data_rtt_slack: float = 0.05

    def __post_init__(self) -> None:
        if self.failover_rtt_threshold <= 1.0:
            raise ValueError(f"failover_rtt_threshold {self.failover_rtt_threshold} must be above 1")
        if not 0.0 <= self.failover_loss_threshold < 1.0:
            raise ValueError(f"failover_loss_threshold {self.failover_loss_threshold} must be in [0, 1)")
        if not 0.0 <= self.exploration_probability <= 1.0:
            raise ValueError(f"exploration_probability {self.exploration_probability} must be in [0, 1]")
        if self.min_paths < 1 or self.spread_paths < 1:
            raise ValueError("min_paths and spread_paths must be at least 1")
        if min(self.switch_margin, self.switch_margin_abs, self.min_dwell, self.data_rtt_slack) < 0:
            raise ValueError(
                "switch_margin, switch_margin_abs, min_dwell and data_rtt_slack must not be negative"
            )


@dataclass(frozen=True, slots=True)
class Candidate:
    path: PathInfo
    quality: QualitySnapshot


@dataclass(frozen=True, slots=True)
class Decision:
    """The path to use (``None``: nothing usable) and the reason, for the operator."""

    path: PathInfo | None
    reason: str
    changed: bool = False  # the active path changed with this decision
    failover: bool = False  # ... because the previous one was down or failing
    exploring: bool = False  # a one-batch exploration, the active path is unchanged
    usable: int = 0  # candidates not down and not excluded
    short_of_paths: bool = False  # usable < min_paths


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    active: str | None
    reason: str
    since: float | None
    failovers: int
    switches: int
    slots: tuple[str | None, ...]


class RandomSource(Protocol):
    def random(self) -> float: ...


@dataclass(slots=True)
class _PathRecord:
    failures: int = 0  # good -> problem transitions not yet forgiven
    good_since: float | None = None
    last_failure: float | None = None
    fell: float | None = None  # the last fall into a problem of its own (down, suspect, lossy, ...)
    broken: bool | None = None  # has a problem of its own (None: not yet evaluated)


@dataclass(slots=True)
class _Remote:
    active: str | None = None
    since: float | None = None
    chosen_rtt: float | None = None  # lowest healthy RTT of the active path since it was chosen
    reason: str = ""
    failovers: int = 0
    switches: int = 0
    slots: list[str | None] = field(default_factory=list)
    slot_rtts: dict[str, float | None] = field(default_factory=dict)  # RTT when the path took its slot
    records: dict[str, _PathRecord] = field(default_factory=dict)


TIER_HEALTHY, TIER_UNMEASURED, TIER_PROBLEM = 0, 1, 2


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


class PathSelector:
    """Chooses and remembers the active path per remote ISD-AS (see the module rules)."""

    def __init__(self, policy: SelectionPolicy | None = None, rng: RandomSource | None = None) -> None:
        self.policy = policy or SelectionPolicy()
        self.rng: RandomSource = rng if rng is not None else random.Random()
        self._remotes: dict[str, _Remote] = {}

    # -- public API ----------------------------------------------------------------------------------

    def set_policy(self, policy: SelectionPolicy) -> None:
        """Take a reloaded policy; choices are re-evaluated at the next call (sessions keep going)."""
        self.policy = policy

    @property
    def failovers(self) -> int:
        return sum(r.failovers for r in self._remotes.values())

    def status(self, dst_ia: str) -> RemoteStatus:
        r = self._remotes.get(dst_ia) or _Remote()
        return RemoteStatus(r.active, r.reason, r.since, r.failovers, r.switches, tuple(r.slots))

    def forget(self, dst_ia: str) -> None:
        self._remotes.pop(dst_ia, None)

    def select(self, dst_ia: str, candidates: Sequence[Candidate], now: float) -> Decision:
        """Update and return the active path for ``dst_ia``; call on every quality change and batch."""
        return self._select(dst_ia, candidates, now)[0]

    def _select(
        self, dst_ia: str, candidates: Sequence[Candidate], now: float
    ) -> tuple[Decision, _Evaluation]:
        remote = self._remotes.setdefault(dst_ia, _Remote())
        ev = _Evaluation(self.policy, candidates, remote, now)
        decision = self._decide(remote, ev, now)
        self._update_slots(remote, ev)
        return decision, ev

    def choose_for_batch(self, dst_ia: str, candidates: Sequence[Candidate], now: float) -> Decision:
        """The active path, or with ``exploration_probability`` another healthy one for this batch."""
        decision, ev = self._select(dst_ia, candidates, now)
        p = self.policy.exploration_probability
        if decision.path is None or p <= 0.0 or self._pinned_usable(candidates):
            return decision
        if self.rng.random() >= p:
            return decision
        others = [c for c in ev.ranked if c.path.id != decision.path.id and not ev.absolute_problem(c)]
        if not others:
            return decision
        pick = others[min(int(self.rng.random() * len(others)), len(others) - 1)]
        return Decision(
            pick.path,
            f"exploring {pick.path.short_id} ({p:.0%} of batches); active {decision.path.short_id}",
            exploring=True,
            usable=decision.usable,
            short_of_paths=decision.short_of_paths,
        )

    def choose_for_flows(
        self, dst_ia: str, candidates: Sequence[Candidate], flows: Sequence[int], now: float
    ) -> list[PathInfo | None]:
        """One path per flow hash (see ``flow_hash``); all the active path unless spreading is on."""
        decision = self.select(dst_ia, candidates, now)
        remote = self._remotes[dst_ia]
        n = self.policy.spread_paths
        if n <= 1 or decision.path is None or self._pinned_usable(candidates):
            return [decision.path] * len(flows)
        by_id = {c.path.id: c.path for c in candidates}
        filled = [s for s in remote.slots if s is not None]
        if not filled:
            return [decision.path] * len(flows)
        out: list[PathInfo | None] = []
        for flow in flows:
            slot = remote.slots[flow % n]
            if slot is None:
                # Slot vacant (fewer healthy paths than slots): borrow a filled one, spread by the hash.
                slot = filled[(flow // n) % len(filled)]
            out.append(by_id[slot])
        return out

    def choose_for_flow(
        self, dst_ia: str, candidates: Sequence[Candidate], flow: int, now: float
    ) -> Decision:
        decision = self.select(dst_ia, candidates, now)
        path = self.choose_for_flows(dst_ia, candidates, [flow], now)[0]
        if path is None or decision.path is None or path.id == decision.path.id:
            return decision
        return Decision(
            path,
            f"flow spread over {self.policy.spread_paths} paths; active {decision.path.short_id}",
            usable=decision.usable,
            short_of_paths=decision.short_of_paths,
        )

    # -- decision ------------------------------------------------------------------------------------

    def _pinned_usable(self, candidates: Sequence[Candidate]) -> bool:
        pin = self.policy.pinned_path
        if not pin:
            return False
        c = _find_pinned(pin, candidates)
        return c is not None and c.quality.state is not PathState.DOWN and not self._excluded(c.path)

    def _excluded(self, path: PathInfo) -> bool:
        return bool(self.policy.excluded_ases) and path.crosses(self.policy.excluded_ases)

    def _decide(self, remote: _Remote, ev: _Evaluation, now: float) -> Decision:
        policy = self.policy
        note = ""
        if policy.pinned_path:
            pinned = _find_pinned(policy.pinned_path, ev.candidates)
            if pinned is None:
                note = (
                    f"pinned path {policy.pinned_path[:8]} is not among the {len(ev.candidates)} candidates"
                )
            elif pinned.quality.state is PathState.DOWN:
                note = f"pinned path {pinned.path.short_id} is down ({pinned.quality.reason})"
            elif self._excluded(pinned.path):
                note = f"pinned path {pinned.path.short_id} crosses an excluded AS"
            else:
                return self._commit(remote, ev, pinned, now, "pinned by operator", failover=False)

        if not ev.ranked:
            return self._none(remote, ev, note)
        best = ev.ranked[0]
        current = ev.by_id.get(remote.active) if remote.active else None

        if current is None or current.path.id not in ev.usable_ids:
            if remote.active is None:
                why = ev.describe(best)
                failover = False
            elif current is None:
                why = f"path {remote.active[:8]} withdrawn by the path source; now {ev.describe(best)}"
                failover = False
            elif current.quality.state is PathState.DOWN:
                best = _successor(ev, current)
                why = f"failover: path {current.path.short_id} down ({current.quality.reason}); "
                why += f"now {best.path.short_id}, {ev.describe(best)}"
                failover = True
            else:
                why = f"path {current.path.short_id} excluded by policy; now {ev.describe(best)}"
                failover = False
            return self._commit(remote, ev, best, now, _join(note, why), failover=failover)

        if best is current:
            return self._commit(remote, ev, current, now, _join(note, ev.describe(current)), failover=False)

        problem = ev.problem(current)
        # Leaving a path that merely compares badly (RTT) for one that failed a moment ago is the first
        # half of a flap: that needs the recovered path to be settled, as a voluntary switch does.
        urgent = ev.absolute_problem(current) is not None or not ev.recovering(best)
        if (
            problem is not None
            and urgent
            and ev.tier(best) != TIER_PROBLEM
            and self._degraded(remote, ev, current)
        ):
            if ev.absolute_problem(current) is not None:
                best = _successor(ev, current)
            why = f"failover: path {current.path.short_id} {problem}; now {best.path.short_id}, "
            why += ev.describe(best)
            return self._commit(remote, ev, best, now, _join(note, why), failover=True)

        held = now - remote.since if remote.since is not None else math.inf
        if ev.better(best, current) and ev.settled(best):
            if held >= policy.min_dwell:
                why = f"{best.path.short_id} {ev.describe(best)}, better than {current.path.short_id} "
                why += f"({ev.metric_text(current)})"
                return self._commit(remote, ev, best, now, _join(note, why), failover=False)
            why = f"{ev.describe(current, as_best=False)}; switch to {best.path.short_id} held back "
            why += f"(dwell {held:.1f} of {policy.min_dwell:.1f} s)"
        elif ev.better(best, current):
            rec = remote.records.get(best.path.id)
            why = f"{ev.describe(current, as_best=False)}; {best.path.short_id} recovering from "
            why += f"{rec.failures if rec else 0} failure(s), must stay healthy first"
        else:
            why = f"{ev.describe(current, as_best=False)}; {best.path.short_id} "
            why += f"({ev.metric_text(best)}) not better by the switch margin"
        return self._commit(remote, ev, current, now, _join(note, why), failover=False)

    def _degraded(self, remote: _Remote, ev: _Evaluation, current: Candidate) -> bool:
        """Did the active path itself get worse (failover at once), rather than another get better
        (a voluntary switch, under hysteresis)? RTT above the threshold counts as the former only if
        it is also above the threshold relative to the best RTT the path showed while active."""
        q = current.quality
        if q.suspect or q.loss > self.policy.failover_loss_threshold or _slow_data(q, self.policy):
            return True
        base = remote.chosen_rtt
        return base is None or (
            q.rtt is not None and q.rtt > self.policy.failover_rtt_threshold * base + 2 * q.jitter
        )

    def _commit(
        self, remote: _Remote, ev: _Evaluation, chosen: Candidate, now: float, why: str, failover: bool
    ) -> Decision:
        changed = remote.active != chosen.path.id
        rtt = chosen.quality.rtt if ev.tier(chosen) == TIER_HEALTHY else None
        if changed or remote.chosen_rtt is None:
            remote.chosen_rtt = rtt
        elif rtt is not None:
            remote.chosen_rtt = min(remote.chosen_rtt, rtt)  # the best the active path has shown
        if changed:
            remote.active = chosen.path.id
            remote.since = now
            remote.switches += 1
            if failover:
                remote.failovers += 1
        short = len(ev.usable) < self.policy.min_paths
        if short:
            why += f" [only {len(ev.usable)} usable path(s), min_paths {self.policy.min_paths}]"
        remote.reason = why
        return Decision(chosen.path, why, changed, failover and changed, False, len(ev.usable), short)

    def _none(self, remote: _Remote, ev: _Evaluation, note: str) -> Decision:
        n = len(ev.candidates)
        if n == 0:
            why = "no usable path: the path source has no candidates"
        else:
            down = [c for c in ev.candidates if c.quality.state is PathState.DOWN]
            excluded = n - len(down)
            why = f"no usable path: {len(down)} of {n} down"
            if down:
                why += " (" + "; ".join(f"{c.path.short_id}: {c.quality.reason}" for c in down[:3]) + ")"
            if excluded:
                why += f", {excluded} excluded by policy"
        why = _join(note, why)
        remote.active = None
        remote.since = None
        remote.chosen_rtt = None
        remote.reason = why
        return Decision(None, why, usable=0, short_of_paths=True)

    def _update_slots(self, remote: _Remote, ev: _Evaluation) -> None:
        n = self.policy.spread_paths
        if n <= 1:
            remote.slots = []
            return
        slots = (remote.slots + [None] * n)[:n]
        factor = self.policy.failover_rtt_threshold
        keep: set[str] = set()
        for c in ev.ranked:
            if ev.absolute_problem(c) is not None:
                continue
            base = remote.slot_rtts.get(c.path.id)
            if base is None and c.path.id in slots and c.quality.rtt is not None:
                remote.slot_rtts[c.path.id] = c.quality.rtt  # first measurement of a slot's path
            if base is not None and c.quality.rtt is not None and c.quality.rtt > factor * base:
                continue  # got much slower than when it took the slot
            keep.add(c.path.id)
        slots = [s if s in keep else None for s in slots]
        # Fill from the policy's ranking, but only with paths free of any problem.
        free = [c for c in ev.ranked if c.path.id not in slots and ev.tier(c) != TIER_PROBLEM]
        for i, s in enumerate(slots):
            if s is None and free:
                c = free.pop(0)
                slots[i] = c.path.id
                remote.slot_rtts[c.path.id] = c.quality.rtt
        remote.slots = slots
        for pid in [k for k in remote.slot_rtts if k not in slots]:
            del remote.slot_rtts[pid]


class _Evaluation:
    """The candidates of one remote at one instant, ranked under a policy."""

    def __init__(
        self, policy: SelectionPolicy, candidates: Sequence[Candidate], remote: _Remote, now: float
    ) -> None:
        self.policy = policy
        self.now = now
        self.candidates = list(candidates)
        self.by_id = {c.path.id: c for c in self.candidates}
        ex = policy.excluded_ases
        self.usable = [
            c
            for c in self.candidates
            if c.quality.state is not PathState.DOWN and not (ex and c.path.crosses(ex))
        ]
        self.at_risk, self._risk_paths = _shared_risk(policy, self.candidates, remote.records, now)
        self._active = remote.active
        self._baselines()
        self.usable_ids = {c.path.id for c in self.usable}
        self._records = remote.records
        self._note_health(remote, now)
        # Again with the falls just noted, so the path that fell this instant counts already.
        self.at_risk, self._risk_paths = _shared_risk(policy, self.candidates, remote.records, now)
        self._baselines()
        self.ranked = sorted(self.usable, key=self._key)
        healthy = [c for c in self.ranked if self.tier(c) == TIER_HEALTHY]
        self.min_hops = min((c.path.hop_count for c in healthy), default=None)

    def _baselines(self) -> None:
        """The lowest RTT among paths free of any problem of their own and of shared risk."""
        policy = self.policy
        clean = [
            c
            for c in self.usable
            if not self.risk(c)
            and c.quality.rtt is not None
            and not c.quality.suspect
            and c.quality.loss <= policy.failover_loss_threshold
            and not _slow_data(c.quality, policy)
        ]
        self.min_rtt = min((c.quality.rtt for c in clean if c.quality.rtt is not None), default=None)
        self.min_rtt_preferred = min(
            (c.quality.rtt for c in clean if c.quality.rtt is not None and self.preferred(c)), default=None
        )

    def absolute_problem(self, c: Candidate) -> str | None:
        """What is wrong with the path on its own (down, suspect, lossy), whatever the others do."""
        q, p = c.quality, self.policy
        if q.state is PathState.DOWN:
            return f"down ({q.reason})"
        if q.suspect:
            return q.reason
        if q.loss > p.failover_loss_threshold:
            return f"loss {q.loss:.0%} above {p.failover_loss_threshold:.0%}"
        if _slow_data(q, p):
            return (
                f"data RTT {_ms(q.data_rtt)} above {p.failover_rtt_threshold:g} x its probe RTT {_ms(q.rtt)}"
            )
        return None

    def risk(self, c: Candidate) -> PathInterface | None:
        """An interface of ``c`` that every path that just failed crosses too (see the module rules)."""
        if not self.at_risk or c.path.id == self._active:
            return None  # the active path's own evidence (its data, its probes) outweighs the inference
        return next((i for i in c.path.interfaces if i in self.at_risk), None)

    def problem(self, c: Candidate) -> str | None:
        """The path's own problem, or the shared risk of crossing where other paths just failed."""
        found = self.own_problem(c)
        if found is not None:
            return found
        risky = self.risk(c)
        if risky is not None:
            return (
                f"at risk: crosses {risky.ia}#{risky.ifid} like the {self._risk_paths} paths that just failed"
            )
        return None

    def own_problem(self, c: Candidate) -> str | None:
        """An absolute problem, or an RTT above the threshold factor over the best comparable path
        (the best preferred path for a preferred one)."""
        found = self.absolute_problem(c)
        if found is not None:
            return found
        q, p = c.quality, self.policy
        best = self.min_rtt_preferred if self.preferred(c) and self.min_rtt_preferred else self.min_rtt
        if q.rtt is not None and best is not None and q.rtt > p.failover_rtt_threshold * best + 2 * q.jitter:
            return f"RTT {_ms(q.rtt)} above {p.failover_rtt_threshold:g} x best {_ms(best)}"
        return None

    def tier(self, c: Candidate) -> int:
        if self.problem(c) is not None:
            return TIER_PROBLEM
        return TIER_HEALTHY if c.quality.measured else TIER_UNMEASURED

    def preferred(self, c: Candidate) -> bool:
        return bool(self.policy.preferred_ases) and c.path.crosses(self.policy.preferred_ases)

    def settled(self, c: Candidate) -> bool:
        rec = self._records.get(c.path.id)
        if rec is None or rec.failures == 0:
            return True
        if rec.good_since is None:
            return False
        return self.now - rec.good_since >= self._hold(rec)

    def recovering(self, c: Candidate) -> bool:
        """Did the path fall from healthy lately and has not yet been healthy for its recovery hold?"""
        rec = self._records.get(c.path.id)
        return rec is not None and rec.fell is not None and not self.settled(c)

    def _hold(self, rec: _PathRecord) -> float:
        p = self.policy
        return min(p.min_dwell * 2 ** max(0, min(rec.failures - 1, 16)), p.max_recovery_hold)

    def _note_health(self, remote: _Remote, now: float) -> None:
        seen = set()
        for c in self.candidates:
            seen.add(c.path.id)
            rec = remote.records.setdefault(c.path.id, _PathRecord())
            # A fall is a failure of the path itself (not a worse RTT than another path has), seen
            # happening: from no problem of its own to one.
            broken = c.path.id not in self.usable_ids or self.absolute_problem(c) is not None
            if broken and rec.broken is False:
                rec.fell = now
            rec.broken = broken
            if c.path.id not in self.usable_ids or self.own_problem(c) is not None:
                if rec.good_since is not None or rec.last_failure is None:
                    rec.failures += 1
                    rec.last_failure = now
                rec.good_since = None
            else:
                if rec.good_since is None:
                    rec.good_since = now
                if rec.failures and now - rec.good_since >= self.policy.max_recovery_hold:
                    rec.failures = 0  # healthy long enough: forgiven
        for gone in [k for k in remote.records if k not in seen]:
            del remote.records[gone]

    def _metric(self, c: Candidate) -> tuple[float, ...]:
        q = c.quality
        rtt = q.rtt if q.rtt is not None else math.inf
        if self.tier(c) == TIER_PROBLEM:
            return (0.0 if q.state is not PathState.DOWN else 1.0, float(q.suspect), q.loss, rtt)
        if self.policy.metric is Metric.HOPS:
            return (float(c.path.hop_count), rtt)
        if q.rtt is None:
            return (math.inf, float(c.path.hop_count))
        return (rtt, float(c.path.hop_count))

    def _key(self, c: Candidate) -> tuple[object, ...]:
        return (self.tier(c), not self.settled(c), not self.preferred(c), self._metric(c), c.path.id)

    def better(self, b: Candidate, a: Candidate) -> bool:
        """Is ``b`` better than the active ``a`` by the policy's margin?"""
        tb, ta = self.tier(b), self.tier(a)
        if tb != ta:
            return tb < ta
        pb, pa = self.preferred(b), self.preferred(a)
        if pb != pa:
            return pb
        qb, qa = b.quality, a.quality
        if tb == TIER_PROBLEM and abs(qb.loss - qa.loss) >= 0.05:
            return qb.loss < qa.loss
        if self.policy.metric is Metric.HOPS and b.path.hop_count != a.path.hop_count:
            return b.path.hop_count < a.path.hop_count
        if qb.rtt is None or qa.rtt is None:
            return qb.rtt is not None or (
                self.policy.metric is Metric.LATENCY and b.path.hop_count < a.path.hop_count
            )
        return qb.rtt * (1 + self.policy.switch_margin) + self.policy.switch_margin_abs < qa.rtt

    def metric_text(self, c: Candidate) -> str:
        q = c.quality
        text = f"RTT {_ms(q.rtt)}"
        if self.policy.metric is Metric.HOPS:
            text = f"{c.path.hop_count} hops, " + text
        if q.loss:
            text += f", loss {q.loss:.0%}"
        return text

    def describe(self, c: Candidate, as_best: bool = True) -> str:
        """Why ``c`` is (or, with ``as_best=False``, stays) the choice, in operator words."""
        tier = self.tier(c)
        if tier == TIER_PROBLEM:
            return f"least bad path: {self.problem(c)}"
        if tier == TIER_UNMEASURED:
            return f"no probe answer yet, {c.path.hop_count} hops"
        prefix = ""
        if self.preferred(c):
            prefix = "preferred AS, "
        if self.policy.metric is Metric.HOPS:
            hops = "fewest hops" if as_best and c.path.hop_count == self.min_hops else "hops"
            return prefix + f"{hops} ({c.path.hop_count}), RTT {_ms(c.quality.rtt)}"
        if as_best and c.quality.rtt == self.min_rtt:
            return prefix + f"lowest RTT {_ms(c.quality.rtt)}"
        return prefix + f"RTT {_ms(c.quality.rtt)}"


def _shared_risk(
    policy: SelectionPolicy, candidates: Sequence[Candidate], records: dict[str, _PathRecord], now: float
) -> tuple[frozenset[PathInterface], int]:
    """Interfaces crossed by every path that fell (good -> problem) within the window and has not
    recovered, when there are at least two such paths: the likely place of a shared fault."""
    window = policy.shared_risk_window
    if window <= 0:
        return frozenset(), 0
    fallen = []
    for c in candidates:
        rec = records.get(c.path.id)
        if rec is None or rec.fell is None or now - rec.fell > window:
            continue
        hold = min(policy.min_dwell * 2 ** max(0, min(rec.failures - 1, 16)), policy.max_recovery_hold)
        if rec.good_since is None or now - rec.good_since < hold:  # not recovered, or not proven yet
            fallen.append(frozenset(c.path.interfaces))
    if len(fallen) < 2:
        return frozenset(), 0
    return frozenset.intersection(*fallen), len(fallen)


def _slow_data(q: QualitySnapshot, p: SelectionPolicy) -> bool:
    return (
        q.data_rtt is not None
        and q.rtt is not None
        and q.data_rtt > p.failover_rtt_threshold * q.rtt + p.data_rtt_slack
    )


def _successor(ev: _Evaluation, failed: Candidate) -> Candidate:
    """The path to move to from ``failed``, which stopped delivering (see the module rules)."""
    pool = [c for c in ev.ranked if c is not failed]
    if not pool:
        return ev.ranked[0]
    gone = failed.quality.proven_at
    shared = set(failed.path.interfaces)

    def key(item: tuple[int, Candidate]) -> tuple[object, ...]:
        rank, c = item
        proven = c.quality.proven_at
        fresh = proven is not None and (gone is None or proven > gone)
        overlap = sum(1 for i in c.path.interfaces if i in shared)
        broken = ev.absolute_problem(c) is not None
        return (broken, ev.recovering(c), ev.tier(c), not ev.preferred(c), not fresh, overlap, rank)

    return min(enumerate(pool), key=key)[1]


def _find_pinned(pin: str, candidates: Sequence[Candidate]) -> Candidate | None:
    for c in candidates:
        if c.path.id == pin:
            return c
    matches = [c for c in candidates if len(pin) >= 4 and c.path.id.startswith(pin)]
    return matches[0] if len(matches) == 1 else None


def _join(note: str, why: str) -> str:
    return f"{note}; {why}" if note else why


_FLOW_PROTOCOLS = frozenset({6, 17, 132, 136})  # TCP, UDP, SCTP, UDP-Lite: ports follow the header


def flow_hash(packet: bytes | bytearray | memoryview) -> int:
    """A stable 32-bit hash of an IP packet's 5-tuple (3-tuple for fragments and portless protocols).

    CRC-32, not Python's ``hash``: the same flow must map to the same path in every process."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        proto = packet[9]
        key = bytes(packet[12:20]) + bytes([proto])
        fragmented = (packet[6] & 0x3F) or packet[7]  # MF flag or fragment offset
        if proto in _FLOW_PROTOCOLS and not fragmented and len(packet) >= ihl + 4:
            key += bytes(packet[ihl : ihl + 4])
        return zlib.crc32(key)
    if len(packet) >= 40 and packet[0] >> 4 == 6:
        proto = packet[6]
        key = bytes(packet[8:40]) + bytes([proto])
        if proto in _FLOW_PROTOCOLS and len(packet) >= 44:
            key += bytes(packet[40:44])
        return zlib.crc32(key)
    return zlib.crc32(bytes(packet[:40]))
