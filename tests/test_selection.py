"""Path selection: failover on degradation, hysteresis, policy, exploration and flow spreading.

Most tests run a simulated timeline: every path is probed each PROBE interval; a path's behaviour says
for each probe whether it is answered and with which RTT; the selector is asked once per interval."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance.paths.quality import DownNotice, PathQuality, PathState, QualityConfig
from scion_appliance.paths.selection import (
    Candidate,
    Decision,
    Metric,
    PathSelector,
    SelectionPolicy,
    flow_hash,
)
from scion_appliance.paths.source import PathInfo, PathInterface, StaticPathSource, fingerprint

PROBE = 0.1
DST = "1-ff00:0:112"

# rtt in seconds, or None for a lost probe, as a function of time
Behaviour = Callable[[float], float | None]


def make_path(name: str, hops: int, ases: tuple[str, ...] = ()) -> PathInfo:
    intfs = tuple(PathInterface(ia, i + 1) for i, ia in enumerate(ases or ("1-ff00:0:110", DST)))
    return PathInfo(id=f"{name}{'0' * (16 - len(name))}", hop_count=hops, interfaces=intfs)


class Sim:
    def __init__(
        self,
        behaviours: dict[PathInfo, Behaviour],
        policy: SelectionPolicy | None = None,
        rng: random.Random | None = None,
        qcfg: QualityConfig | None = None,
    ) -> None:
        self.behaviours = behaviours
        self.quality = {p.id: PathQuality(qcfg) for p in behaviours}
        self.selector = PathSelector(policy or SelectionPolicy(), rng)
        self.t = 0.0
        self.probe_id = 0
        self.log: list[tuple[float, Decision]] = []

    def candidates(self, now: float) -> list[Candidate]:
        return [Candidate(p, self.quality[p.id].snapshot(now)) for p in self.behaviours]

    def step(self) -> Decision:
        t = self.t
        for path, behaviour in self.behaviours.items():
            q = self.quality[path.id]
            q.expire(t)
            self.probe_id += 1
            q.probe_sent(self.probe_id, t)
            rtt = behaviour(t)
            if rtt is not None:
                q.probe_reply(self.probe_id, t + rtt)
        now = t + PROBE * 0.99
        for q in self.quality.values():
            q.expire(now)  # the prober's timer: probes older than their timeout are lost
        decision = self.selector.select(DST, self.candidates(now), now)
        self.log.append((now, decision))
        self.t = round(t + PROBE, 9)
        return decision

    def run_until(self, t_end: float) -> Decision:
        decision = self.step()
        while self.t < t_end:
            decision = self.step()
        return decision

    def switches(self) -> list[tuple[float, str | None]]:
        out: list[tuple[float, str | None]] = []
        for now, d in self.log:
            pid = d.path.id if d.path else None
            if not out or out[-1][1] != pid:
                out.append((now, pid))
        return out


def const(rtt: float) -> Behaviour:
    return lambda t: rtt


def step_change(before: Behaviour, at: float, after: Behaviour, until: float = float("inf")) -> Behaviour:
    return lambda t: after(t) if at <= t < until else before(t)


A = make_path("aaaa", 3, ("1-ff00:0:110", "1-ff00:0:120", DST))
B = make_path("bbbb", 4, ("1-ff00:0:110", "1-ff00:0:130", "1-ff00:0:131", DST))
C = make_path("cccc", 2, ("1-ff00:0:110", DST))


def first_time_on(sim: Sim, path_id: str, after: float) -> float:
    return next(now for now, d in sim.log if now >= after and d.path is not None and d.path.id == path_id)


# --- default choice and reasons -----------------------------------------------------------------------


def test_lowest_rtt_wins_and_says_so() -> None:
    sim = Sim({A: const(0.0121), B: const(0.020)})
    d = sim.run_until(1.0)
    assert d.path == A
    assert d.reason == "lowest RTT 12.1 ms"
    assert sim.selector.status(DST).active == A.id


def test_before_any_answer_the_fewest_hop_path_is_used() -> None:
    cands = [Candidate(p, PathQuality().snapshot(0.0)) for p in (A, B, C)]
    d = PathSelector().select(DST, cands, 0.0)
    assert d.path == C and d.reason == "no probe answer yet, 2 hops"


# --- degradation and recovery ---------------------------------------------------------------------------


def test_rtt_degradation_moves_traffic_within_three_intervals_and_back_after_hysteresis() -> None:
    policy = SelectionPolicy(min_dwell=2.0)
    sim = Sim({A: step_change(const(0.010), 5.0, const(0.060), until=10.0), B: const(0.020)}, policy)
    sim.run_until(5.0)
    assert sim.log[-1][1].path == A
    sim.run_until(10.0)
    moved = first_time_on(sim, B.id, 5.0)
    assert moved - 5.0 <= 3 * PROBE
    failover = next(d for now, d in sim.log if now == moved)
    assert failover.failover and failover.reason.startswith("failover: path aaaa0000 RTT 60.0 ms above 1.5 x")
    assert sim.selector.failovers == 1
    sim.run_until(25.0)
    back = first_time_on(sim, A.id, 10.0)
    assert back - 10.0 >= policy.min_dwell  # recovery plus hysteresis, not at the first good probe
    assert back - 10.0 < 6.0
    assert [pid for _, pid in sim.switches()] == [A.id, B.id, A.id]  # no flapping on the way
    assert sim.selector.failovers == 1


def test_loss_degradation_moves_traffic_within_three_intervals() -> None:
    lossy = step_change(const(0.010), 3.0, lambda t: None if round(t / PROBE) % 3 else 0.010)
    sim = Sim({A: lossy, B: const(0.030)})
    sim.run_until(6.0)
    moved = first_time_on(sim, B.id, 3.0)
    assert moved - 3.0 <= 3 * PROBE
    d = next(d for now, d in sim.log if now == moved)
    assert d.failover and "loss" in d.reason and "above 10%" in d.reason


def test_cut_link_fails_over_within_three_intervals_and_down_path_is_never_used() -> None:
    sim = Sim({A: step_change(const(0.010), 2.0, lambda t: None), B: const(0.030)})
    sim.run_until(4.0)
    moved = first_time_on(sim, B.id, 2.0)
    assert moved - 2.0 <= 3 * PROBE
    assert all(d.path == B for now, d in sim.log if now > moved)
    assert sim.quality[A.id].snapshot(sim.t).state is PathState.DOWN


def test_scmp_interface_down_fails_over_at_once() -> None:
    sim = Sim({A: const(0.010), B: const(0.030)})
    sim.run_until(1.0)
    sim.quality[A.id].scmp_down(DownNotice.EXTERNAL_INTERFACE_DOWN, "1-ff00:0:120 interface 2")
    d = sim.selector.select(DST, sim.candidates(sim.t), sim.t)
    assert d.path == B and d.changed and d.failover
    assert d.reason.startswith(
        "failover: path aaaa0000 down (SCMP external interface down (1-ff00:0:120 interface 2)); now bbbb0000"
    )


def test_data_plane_silence_fails_over_before_probes_notice() -> None:
    sim = Sim(
        {A: const(0.010), B: const(0.030)},
        qcfg=QualityConfig(liveness_timeout=0.15, liveness_timeout_without_acks=0.15),
    )
    sim.run_until(1.0)
    qa = sim.quality[A.id]
    qa.data_sent(1.0)  # data goes out on A; nothing comes back (no probe in between)
    d = sim.selector.select(DST, sim.candidates(1.1), 1.1)
    assert d.path == A
    d = sim.selector.select(DST, sim.candidates(1.16), 1.16)
    assert d.path == B and d.failover and "suspect: data sent, nothing back for 160.0 ms" in d.reason


def test_a_path_that_keeps_failing_is_held_back_longer_each_time() -> None:
    # A is better but fails for 1 s every 3 s; a naive selector would switch twice per cycle.
    def flappy(t: float) -> float | None:
        return 0.030 if (t % 3.0) < 1.0 else 0.010

    policy = SelectionPolicy(min_dwell=1.0, max_recovery_hold=30.0)
    sim = Sim({A: flappy, B: const(0.015)}, policy)
    sim.run_until(60.0)
    assert len(sim.switches()) <= 12  # 40 switches without the growing recovery hold


# --- hysteresis -------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.floats(0.001, 0.2),
    st.integers(0, 2**32 - 1),
    st.integers(2, 3),
)
def test_noise_within_the_margin_never_switches(base: float, seed: int, n: int) -> None:
    policy = SelectionPolicy(switch_margin=0.1, min_dwell=0.5)
    rnd = random.Random(seed)
    paths = [A, B, C][:n]

    def noisy(t: float) -> float:
        return base * (1 + 0.1 * rnd.random())

    sim = Sim({p: noisy for p in paths}, policy)
    sim.run_until(8.0)
    assert len(sim.switches()) == 1
    assert all(not d.failover for _, d in sim.log)


def test_better_path_waits_for_the_dwell_time() -> None:
    policy = SelectionPolicy(min_dwell=2.0)
    sel = PathSelector(policy)
    qa, qb = PathQuality(), PathQuality()
    switched_at = None
    for i in range(40):
        t = i * PROBE
        qa.probe_sent(2 * i, t)
        qa.probe_reply(2 * i, t + 0.020)
        cands = [Candidate(A, qa.snapshot(t + 0.05))]
        if t >= 0.3:  # B shows up (a new path from the source), much better
            qb.probe_sent(2 * i + 1, t)
            qb.probe_reply(2 * i + 1, t + 0.005)
            cands.append(Candidate(B, qb.snapshot(t + 0.05)))
        d = sel.select(DST, cands, t + 0.05)
        if 0.3 <= t < 1.9:
            assert d.path == A and "switch to bbbb0000 held back (dwell" in d.reason
        if d.path == B and switched_at is None:
            switched_at = t + 0.05
            assert d.reason == "bbbb0000 lowest RTT 5.0 ms, better than aaaa0000 (RTT 20.0 ms)"
    assert switched_at is not None and 2.0 <= switched_at < 2.2
    assert sel.failovers == 0 and sel.status(DST).switches == 2


def test_slightly_better_path_does_not_take_over() -> None:
    sim = Sim(
        {A: const(0.020), B: step_change(const(0.030), 1.0, const(0.0185))}, SelectionPolicy(min_dwell=0.1)
    )
    d = sim.run_until(5.0)
    assert d.path == A
    assert "not better by the switch margin" in d.reason


# --- never a down path ------------------------------------------------------------------------------------

state_events = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(["ok", "lost", "scmp", "data"]), st.floats(0.001, 0.2)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(state_events, st.integers(0, 2**32 - 1), st.integers(1, 3), st.booleans())
def test_a_down_path_is_never_returned(events: list, seed: int, spread: int, pin: bool) -> None:
    paths = [A, B, C, make_path("dddd", 5)]
    qs = {p.id: PathQuality(QualityConfig(down_after_lost=2, up_after_answers=2)) for p in paths}
    policy = SelectionPolicy(
        exploration_probability=0.5, spread_paths=spread, pinned_path=B.id if pin else None, min_dwell=0.3
    )
    sel = PathSelector(policy, random.Random(seed))
    t = 0.0
    for i, (which, kind, rtt) in enumerate(events):
        q = qs[paths[which].id]
        if kind == "ok":
            q.probe_sent(i, t)
            q.probe_reply(i, t + rtt)
        elif kind == "lost":
            q.probe_sent(i, t)
            q.expire(t + 5)
        elif kind == "scmp":
            q.scmp_down(DownNotice.INTERNAL_CONNECTIVITY_DOWN)
        else:
            q.data_sent(t)
        t += 0.1
        cands = [Candidate(p, qs[p.id].snapshot(t)) for p in paths]
        down = {c.path.id for c in cands if c.quality.state is PathState.DOWN}
        for d in (sel.select(DST, cands, t), sel.choose_for_batch(DST, cands, t)):
            assert d.path is None or d.path.id not in down
            if d.path is None:
                assert len(down) == len(paths) and d.reason.startswith(("no usable path", "pinned path"))
        for p in sel.choose_for_flows(DST, cands, list(range(16)), t):
            assert p is None or p.id not in down


def test_all_down_gives_none_with_the_reason_then_recovers() -> None:
    sim = Sim(
        {
            A: step_change(const(0.01), 1.0, lambda t: None, 3.0),
            B: step_change(const(0.02), 1.0, lambda t: None, 3.0),
        }
    )
    sim.run_until(2.5)
    d = sim.log[-1][1]
    assert d.path is None
    assert d.reason.startswith("no usable path: 2 of 2 down (aaaa0000: ")
    sim.run_until(4.0)
    assert sim.log[-1][1].path == A


def test_withdrawn_active_path_is_replaced() -> None:
    sim = Sim({A: const(0.010), B: const(0.030)})
    sim.run_until(1.0)
    cands = [c for c in sim.candidates(sim.t) if c.path != A]
    d = sim.selector.select(DST, cands, sim.t)
    assert d.path == B and d.changed and not d.failover
    assert d.reason.startswith("path aaaa0000 withdrawn by the path source")


# --- operator policy --------------------------------------------------------------------------------------


def test_pinned_path_wins_unless_down() -> None:
    policy = SelectionPolicy(pinned_path=B.id[:8])
    sim = Sim({A: const(0.010), B: step_change(const(0.050), 2.0, lambda t: None, 4.0)}, policy)
    sim.run_until(1.5)
    d = sim.log[-1][1]
    assert d.path == B and d.reason == "pinned by operator"
    sim.run_until(3.0)
    d = sim.log[-1][1]
    assert d.path == A
    assert d.reason.startswith("pinned path bbbb0000 is down (")
    sim.run_until(5.0)
    assert sim.log[-1][1].path == B and sim.log[-1][1].reason == "pinned by operator"


def test_pinned_path_absent_is_reported() -> None:
    sim = Sim({A: const(0.010)}, SelectionPolicy(pinned_path="ffffffff"))
    d = sim.run_until(0.5)
    assert d.path == A and d.reason.startswith("pinned path ffffffff is not among the 1 candidates")


def test_excluded_ases_are_never_used() -> None:
    policy = SelectionPolicy(excluded_ases=frozenset({"1-ff00:0:120"}))
    sim = Sim({A: const(0.005), B: const(0.030)}, policy)
    assert sim.run_until(1.0).path == B
    sim.selector.set_policy(SelectionPolicy(excluded_ases=frozenset({"1-ff00:0:120", "1-ff00:0:130"})))
    d = sim.step()
    assert d.path is None and "2 excluded by policy" in d.reason


def test_policy_change_moves_off_a_newly_excluded_path() -> None:
    sim = Sim({A: const(0.005), B: const(0.030)})
    sim.run_until(1.0)
    sim.selector.set_policy(SelectionPolicy(excluded_ases=frozenset({"1-ff00:0:120"})))
    d = sim.step()
    assert d.path == B and d.reason.startswith("path aaaa0000 excluded by policy")


def test_preferred_as_beats_lower_rtt() -> None:
    sim = Sim({A: const(0.010), B: const(0.030)}, SelectionPolicy(preferred_ases=frozenset({"1-ff00:0:131"})))
    d = sim.run_until(1.0)
    assert d.path == B and d.reason.startswith("preferred AS")


def test_fewest_hops_policy() -> None:
    sim = Sim({A: const(0.010), B: const(0.030), C: const(0.012)}, SelectionPolicy(metric=Metric.HOPS))
    d = sim.run_until(1.0)
    assert d.path == C and d.reason == "fewest hops (2), RTT 12.0 ms"


def test_short_of_paths_is_flagged() -> None:
    sim = Sim(
        {A: const(0.010), B: step_change(const(0.02), 1.0, lambda t: None)}, SelectionPolicy(min_paths=2)
    )
    assert not sim.run_until(0.5).short_of_paths
    d = sim.run_until(2.0)
    assert d.short_of_paths and d.reason.endswith("[only 1 usable path(s), min_paths 2]")


# --- exploration ------------------------------------------------------------------------------------------


class Scripted:
    def __init__(self, values: list[float]) -> None:
        self.values = values

    def random(self) -> float:
        return self.values.pop(0)


def test_exploration_uses_another_healthy_path_for_one_batch() -> None:
    sim = Sim(
        {A: const(0.010), B: const(0.020), C: lambda t: None}, SelectionPolicy(exploration_probability=0.2)
    )
    sim.run_until(2.0)  # C never answers: down once its first probes time out (1 s before any RTT)
    sel = sim.selector
    cands = sim.candidates(sim.t)
    sel.rng = Scripted([0.5])
    assert sel.choose_for_batch(DST, cands, sim.t).path == A  # 0.5 >= 0.2: no exploration
    sel.rng = Scripted([0.1, 0.99])
    d = sel.choose_for_batch(DST, cands, sim.t)
    assert d.exploring and d.path == B  # C is down: never explored
    assert d.reason.startswith("exploring bbbb0000 (20% of batches); active aaaa0000")
    assert sel.status(DST).active == A.id


def test_exploration_share_matches_the_probability() -> None:
    sim = Sim(
        {A: const(0.010), B: const(0.020)}, SelectionPolicy(exploration_probability=0.1), random.Random(7)
    )
    sim.run_until(1.0)
    cands = sim.candidates(sim.t)
    explored = sum(sim.selector.choose_for_batch(DST, cands, sim.t).exploring for _ in range(4000))
    assert 320 < explored < 480


def test_no_exploration_when_pinned() -> None:
    policy = SelectionPolicy(exploration_probability=1.0, pinned_path=A.id)
    sim = Sim({A: const(0.010), B: const(0.020)}, policy, random.Random(1))
    sim.run_until(0.5)
    cands = sim.candidates(sim.t)
    assert all(sim.selector.choose_for_batch(DST, cands, sim.t).path == A for _ in range(50))


# --- spreading --------------------------------------------------------------------------------------------


def test_flows_stay_on_their_path_while_it_is_healthy() -> None:
    policy = SelectionPolicy(spread_paths=2)
    sim = Sim({A: step_change(const(0.010), 2.0, lambda t: None), B: const(0.012), C: const(0.014)}, policy)
    sim.run_until(1.0)
    flows = list(range(200))
    before = sim.selector.choose_for_flows(DST, sim.candidates(sim.t), flows, sim.t)
    assert {p.id for p in before if p} == {A.id, B.id}  # the best two
    assert sim.selector.choose_for_flows(DST, sim.candidates(sim.t), flows, sim.t) == before
    sim.run_until(3.0)  # A dies
    after = sim.selector.choose_for_flows(DST, sim.candidates(sim.t), flows, sim.t)
    for b, a in zip(before, after, strict=True):
        assert a is not None and a != A
        if b == B:
            assert a == B  # flows on the healthy path did not move
        else:
            assert a == C
    sim.behaviours[A] = const(0.005)  # A comes back, better than ever: nobody moves
    sim.run_until(10.0)
    assert sim.selector.choose_for_flows(DST, sim.candidates(sim.t), flows, sim.t) == after


def ip4(src: str, dst: str, proto: int, sport: int, dport: int, payload: bytes = b"", frag: int = 0) -> bytes:
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 1, frag, 64, proto, 0,
        bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))),
    )  # fmt: skip
    return hdr + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def test_flow_hash_depends_on_the_five_tuple_only() -> None:
    a = ip4("192.0.2.1", "198.51.100.2", 17, 1000, 53, b"x")
    assert flow_hash(a) == flow_hash(ip4("192.0.2.1", "198.51.100.2", 17, 1000, 53, b"other payload"))
    assert flow_hash(a) != flow_hash(ip4("192.0.2.1", "198.51.100.2", 17, 1001, 53))
    assert flow_hash(a) != flow_hash(ip4("192.0.2.1", "198.51.100.2", 6, 1000, 53))
    # fragments carry no ports: all pieces of a datagram hash alike
    f1 = ip4("192.0.2.1", "198.51.100.2", 17, 1000, 53, frag=0x2000)
    f2 = ip4("192.0.2.1", "198.51.100.2", 17, 7, 7, frag=0x0010)
    assert flow_hash(f1) == flow_hash(f2)
    v6 = bytes([0x60, 0, 0, 0, 0, 8, 17, 64]) + bytes(range(32)) + struct.pack("!HHHH", 5, 6, 8, 0)
    assert flow_hash(v6) != flow_hash(v6[:40] + struct.pack("!HHHH", 5, 7, 8, 0))
    assert flow_hash(b"") == flow_hash(b"")  # garbage hashes, never raises


# --- path source and identity -----------------------------------------------------------------------------


def test_fingerprint_is_stable_and_interface_based() -> None:
    intfs = (PathInterface("1-ff00:0:110", 1), PathInterface("1-ff00:0:111", 41))
    fp = fingerprint(intfs)
    assert len(fp) == 64 and fp == fingerprint(list(intfs))
    assert fp != fingerprint(intfs[::-1])
    assert fingerprint(()) == ""
    p = PathInfo(id=fp, hop_count=2, interfaces=intfs, raw=b"\x00" * 8, next_hop=("127.0.0.1", 31002))
    assert p.ases == ("1-ff00:0:110", "1-ff00:0:111") and p.short_id == fp[:8]
    src = StaticPathSource({DST: [p]})
    assert src.paths(DST) == [p] and src.paths("1-ff00:0:999") == []


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="failover_rtt_threshold"):
        SelectionPolicy(failover_rtt_threshold=1.0)
    with pytest.raises(ValueError, match="exploration_probability"):
        SelectionPolicy(exploration_probability=1.5)


# --- after a dead path: the successor; data slower than its probes ---------------------------------------

X = make_path("xxxx", 3, ("1-ff00:0:110", "1-ff00:0:120", DST))  # shares 1-ff00:0:120 with A
Y = make_path("yyyy", 3, ("1-ff00:0:110", "1-ff00:0:140", DST))


def test_successor_of_a_silent_path_has_fresh_evidence_then_disjoint_links() -> None:
    # X is the lowest RTT after A, but shares A's interfaces; Y is slower but disjoint from A's middle.
    sim = Sim(
        {A: const(0.010), X: const(0.011), Y: const(0.012)},
        qcfg=QualityConfig(liveness_timeout=0.15, liveness_timeout_without_acks=0.15),
    )
    sim.run_until(1.0)
    assert sim.selector.status(DST).active == A.id
    qa = sim.quality[A.id]
    qa.data_acked(1.0, 1, 1, rtt=0.01)  # A delivered what was sent at 0.99; later data goes unanswered
    qa.data_sent(1.0)
    d = sim.selector.select(DST, sim.candidates(1.2), 1.2)
    # No candidate has proven itself after 0.99 (last probes went out at 0.9): the fewest shared
    # interfaces decide.
    assert d.path == Y and d.failover and "suspect" in d.reason
    # Same again, but X answered a probe sent after A's last delivery: fresh evidence wins.
    sim2 = Sim(
        {A: const(0.010), X: const(0.011), Y: const(0.012)},
        qcfg=QualityConfig(liveness_timeout=0.15, liveness_timeout_without_acks=0.15),
    )
    sim2.run_until(1.0)
    qa2 = sim2.quality[A.id]
    qa2.data_acked(1.0, 1, 1, rtt=0.01)
    qa2.data_sent(1.0)
    answer_probe(sim2.quality[X.id], 10_000, 1.05, 0.011)
    d = sim2.selector.select(DST, sim2.candidates(1.2), 1.2)
    assert d.path == X and d.failover


def test_data_slower_than_its_own_probes_is_a_problem() -> None:
    sim = Sim({A: const(0.010), B: const(0.030)})
    sim.run_until(1.0)
    qa = sim.quality[A.id]
    for i in range(5):  # probes still say 10 ms; acked data says 200 ms (a new delay the probes lag on)
        qa.data_acked(1.0 + i * 0.01, i + 1, i + 1, rtt=0.200)
    d = sim.selector.select(DST, sim.candidates(1.05), 1.05)
    assert d.path == B and d.failover
    assert "data RTT 200.0 ms above 1.5 x its probe RTT 10.0 ms" in d.reason
    # Within the slack (data crosses the far gateway too) it is not a problem.
    sim2 = Sim({A: const(0.010), B: const(0.030)})
    sim2.run_until(1.0)
    for i in range(5):
        sim2.quality[A.id].data_acked(1.0 + i * 0.01, i + 1, i + 1, rtt=0.060)
    assert sim2.selector.select(DST, sim2.candidates(1.05), 1.05).path == A


def answer_probe(q: PathQuality, probe_id: int, sent: float, rtt: float) -> None:
    q.probe_sent(probe_id, sent)
    q.probe_reply(probe_id, sent + rtt)


def _path(name: str, *intfs: tuple[str, int]) -> PathInfo:
    return PathInfo(id=f"{name}{'0' * (16 - len(name))}", hop_count=len(intfs), interfaces=tuple(
        PathInterface(ia, ifid) for ia, ifid in intfs
    ))  # fmt: skip


# Three paths from 111: P and Q cross link 110#10 - 210#10; R goes round it via 120.
_UP, _LINK, _DOWN = ("1-ff00:0:111", 41), ("1-ff00:0:110", 10), ("2-ff00:0:211", 41)
SR_P = _path("pppp", _UP, ("1-ff00:0:110", 1), _LINK, ("2-ff00:0:210", 10), _DOWN)
SR_Q = _path("qqqq", ("1-ff00:0:111", 42), ("1-ff00:0:110", 2), _LINK, ("2-ff00:0:210", 10), _DOWN)
SR_S = _path("ssss", _UP, ("1-ff00:0:110", 1), _LINK, ("2-ff00:0:210", 10), ("2-ff00:0:211", 42))
SR_R = _path("rrrr", ("1-ff00:0:111", 43), ("1-ff00:0:120", 1), ("1-ff00:0:120", 10), ("2-ff00:0:220", 10),
             ("2-ff00:0:220", 1), ("2-ff00:0:211", 43))  # fmt: skip


def test_successor_of_a_lossy_path_shares_the_fewest_interfaces() -> None:
    lossy = step_change(const(0.010), 2.0, lambda t: None if int(t * 10) % 2 else 0.010)
    sim = Sim(
        {SR_P: lossy, SR_Q: const(0.011), SR_S: const(0.012), SR_R: const(0.014)},
        SelectionPolicy(min_dwell=1.0),
    )
    sim.run_until(4.0)
    # Q and S are faster than R but share P's link 110#10; R shares nothing with P.
    assert [pid for _, pid in sim.switches()] == [SR_P.id, SR_R.id]


def test_paths_crossing_where_two_paths_just_fell_are_skipped() -> None:
    # The link 110#10 starts losing: P (active) and Q both cross it and fall. S crosses it too but its
    # probes happen to answer; R avoids it but is too slow to be in the healthy tier (30 ms vs 10).
    # Without the shared-risk inference the successor would be S (healthy tier); with it, S is at
    # risk like the two that fell, and R is taken.
    lossy = step_change(const(0.010), 2.0, lambda t: None if int(t * 10) % 2 else 0.010)
    lossy_q = step_change(const(0.011), 2.0, lambda t: None if int(t * 10) % 2 else 0.011)
    sim = Sim(
        {SR_P: lossy, SR_Q: lossy_q, SR_S: const(0.012), SR_R: const(0.030)}, SelectionPolicy(min_dwell=1.0)
    )
    sim.run_until(4.0)
    assert [pid for _, pid in sim.switches()] == [SR_P.id, SR_R.id]
    off = SelectionPolicy(min_dwell=1.0, shared_risk_window=0.0)
    sim2 = Sim({SR_P: lossy, SR_Q: lossy_q, SR_S: const(0.012), SR_R: const(0.030)}, off)
    sim2.run_until(4.0)
    assert [pid for _, pid in sim2.switches()][:2] == [SR_P.id, SR_S.id]


def test_shared_risk_alone_never_moves_a_working_path() -> None:
    sim = Sim({SR_P: const(0.010), SR_Q: const(0.011), SR_S: const(0.012), SR_R: const(0.014)})
    sim.run_until(2.0)
    assert sim.selector.status(DST).active == SR_P.id
    for q in (SR_Q, SR_S):  # two other paths over the same link fall; P keeps answering
        sim.quality[q.id].scmp_down(DownNotice.EXTERNAL_INTERFACE_DOWN)
    sim.run_until(3.0)
    assert [pid for _, pid in sim.switches()] == [SR_P.id]


def test_no_flap_back_to_a_recovering_path_over_a_mere_rtt_gap() -> None:
    # A fails for 0.5 s; traffic moves to B (slower). A answers again at once, but B's only problem
    # is its RTT: traffic stays on B until A has been healthy for its recovery hold, then goes back.
    policy = SelectionPolicy(min_dwell=1.0)
    sim = Sim({A: step_change(const(0.010), 2.0, lambda t: None, until=2.5), B: const(0.030)}, policy)
    sim.run_until(6.0)
    switches = sim.switches()
    assert [pid for _, pid in switches] == [A.id, B.id, A.id]
    back = switches[2][0]
    assert back - 2.5 >= policy.min_dwell
