"""Failover and degradation across the real lab: two gateways, steady traffic, a broken or degraded link.

Everything is real (the lab's router processes, the gateways' handshake, sealing, probing and acks); the
outage is the gap in received sequence numbers (``lab.failover``). The default run does 3 trials of each
kind; SCION_FULL_TESTS=1 adds the 20-trial runs the issue asks for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from scion_appliance.errors import OperatorError
from scion_appliance.lab.failover import Rig, Trial, rig
from scion_appliance.lab.lab import Lab, running_lab
from scion_appliance.paths.selection import SelectionPolicy

PROBE_INTERVAL = 0.1  # the configuration default (probe_interval_ms = 100)
OUTAGE_LIMIT = 1.0  # seconds: the bound for every single trial


@pytest.fixture(scope="module")
def module_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = Path(tmp_path_factory.mktemp("failover"))
    for attempt in range(3):
        try:
            with running_lab(base / f"lab{attempt}") as lab:
                yield lab
            return
        except OperatorError as e:
            # running_lab picks a random 127.NET network; another lab on this host may hold it.
            if "Address already in use" not in str(e) or attempt == 2:
                raise


@pytest.fixture
def lab(module_lab: Lab) -> Iterator[Lab]:
    """The shared lab, every link repaired and unimpaired after each test."""
    yield module_lab
    for name, link in module_lab.links.items():
        if not link["up"]:
            module_lab.restore(name)
        if any(link["impairment"].values()):
            module_lab.impair(name)


# --- a dead path: link cut, 100% loss ---------------------------------------------------------------


async def run_trials(lab: Lab, n: int) -> tuple[list[Trial], Rig]:
    results = []
    async with rig(lab, PROBE_INTERVAL) as r:
        for kind in ("cut", "loss"):
            for _ in range(n):
                results.append(await r.trial(kind))
    return results, r


def check_trials(results: list[Trial], r: Rig) -> None:
    report = "\n".join(
        f"{t.kind} {t.link}: {t.path_before[:8]} -> {t.path_after[:8]}, outage {t.outage_s * 1000:.1f} ms, "
        f"lost {t.lost}/{t.sent}"
        for t in results
    )
    for t in results:
        assert t.outage_s < OUTAGE_LIMIT, report
        assert t.path_after != t.path_before, report  # traffic moved (the link stayed broken meanwhile)
        assert t.detected_s is not None and t.detected_s < OUTAGE_LIMIT, report
        assert t.back_on_failed == 0, report  # once left, the broken path got nothing more
    assert r.flow.sent_on_down == 0  # no datagram on a path known down
    # Datagrams sent on one path arrived in the order they were sent, across all trials.
    assert r.flow.reordered() == 0
    assert r.flow.send_errors == 0, r.flow.errors  # a usable path was there for every send


async def test_cut_and_total_loss_each_fail_over_within_a_second(lab: Lab) -> None:
    results, r = await run_trials(lab, 3)
    check_trials(results, r)
    assert r.a.counters["acks_received"] > 0 and r.b.counters["acks_sent"] > 0
    assert r.a.counters["drop_bad_ack"] == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_twenty_trials_each_fail_over_within_a_second(lab: Lab) -> None:
    results, r = await run_trials(lab, 20)
    check_trials(results, r)


async def test_steady_flow_on_one_path_is_in_order_and_complete(lab: Lab) -> None:
    async with rig(lab, PROBE_INTERVAL, policy=SelectionPolicy(min_dwell=60.0)) as r:
        await trio.sleep(0.5)  # settle on the best measured path; min_dwell keeps it there
        start = len(r.flow.sent_at)
        switches = r.switches()
        await trio.sleep(1.5)
        end = len(r.flow.sent_at)
        await trio.sleep(0.3)
        switched = r.switches() - switches
    seqs = [s for s in r.flow.arrival_order if start <= s < end]
    assert sorted(seqs) == list(range(start, end))  # every datagram arrived
    assert r.flow.reordered() == 0  # and those sent on one path in the order sent
    if not switched:
        # Both gateways share this test process: a scheduling stall of it longer than the liveness
        # timeout looks like a dead path and moves traffic (a false alarm, costing no datagram). Only
        # without one is the whole flow on one path, so all in order.
        assert seqs == list(range(start, end))


# --- degradation: delay or loss past the thresholds -----------------------------------------------------

BASE_DELAY_MS = 20  # on every link off the chosen path: that path is the clear best, noise cannot flip it


async def steady_on(r: Rig, path_id: str, seconds: float, timeout: float = 8.0) -> None:
    """Wait until traffic has stayed on ``path_id`` for ``seconds`` without a switch."""
    with trio.fail_after(timeout):
        while True:
            while r.active() != path_id:
                await trio.sleep(0.02)
            switches = r.switches()
            await trio.sleep(seconds)
            if r.switches() == switches and r.active() == path_id:
                return


def story(r: Rig, t0: float) -> str:
    return "\n".join(
        f"{e['t'] - t0:+.3f} s {e['path'][:8] if e['path'] else None}: {e['reason']}"
        for e in r.a.failover_log
    )


async def degrade(lab: Lab, impairment: dict[str, float]) -> None:
    """Make one path P the clear best, degrade its middle link, repair it. Traffic must leave P within
    three probe intervals, never come back while degraded, return after repair plus the hysteresis
    (recovery hold), and then stay."""
    a_ia, b_ia = lab.leaves[0], lab.leaves[1]
    p = lab.paths(a_ia, b_ia)[0]
    p_links = lab.links_of(p)
    victim = p_links[len(p_links) // 2]
    for name in lab.links:
        if name not in p_links:
            lab.impair(name, delay_ms=BASE_DELAY_MS)
    policy = SelectionPolicy(min_dwell=0.5)
    # A datagram every 5 ms: the lab's routers delay packets in Python; less load, less noise.
    async with rig(lab, PROBE_INTERVAL, policy=policy, send_interval=0.005) as r:
        await steady_on(r, p.id, 0.5)
        rtts = {q["id"]: q["rtt_ms"] for q in r.a.paths(b_ia)}
        alternatives = [
            rtts[q.id] for q in lab.paths(a_ia, b_ia) if victim not in lab.links_of(q) and rtts[q.id]
        ]
        if "delay_ms" in impairment:  # the delay (both ways) takes P past the RTT threshold
            assert rtts[p.id] + 2 * impairment["delay_ms"] > policy.failover_rtt_threshold * min(alternatives)
        else:
            assert impairment["loss"] > policy.failover_loss_threshold
        await steady_on(r, p.id, 0.3)  # (on a busy host, a scheduling stall can look like a dead path)
        t0 = time.monotonic()
        await r.change("impair", victim, **impairment)
        seen: list[str] = []
        moved = None
        while time.monotonic() - t0 < 1.2:
            now_on = r.active()
            if now_on and (not seen or seen[-1] != now_on):
                seen.append(now_on)
            if moved is None and now_on != p.id:
                moved = time.monotonic() - t0
            await trio.sleep(0.002)
        log = story(r, t0)
        assert moved is not None and moved <= 3 * PROBE_INTERVAL, log
        assert seen[0] == p.id and p.id not in seen[1:], log  # never back on P while it is degraded
        # No flapping: no path is taken twice. (Moving on more than once is fine: the paths that share
        # the degraded link show it one after the other.)
        assert len(seen) == len(set(seen)), log
        await r.change("impair", victim)
        t1 = time.monotonic()
        with trio.fail_after(6):
            while r.active() != p.id:
                await trio.sleep(0.01)
        back = time.monotonic() - t1
        assert back >= policy.min_dwell  # the recovered path had to prove itself first (hysteresis)
        settled = r.switches()
        await trio.sleep(1.0)
        log = story(r, t0)
        assert r.switches() == settled and r.active() == p.id, log  # and then it stays
    assert r.flow.reordered() == 0


async def test_delay_past_the_rtt_threshold_moves_traffic_and_it_comes_back(lab: Lab) -> None:
    await degrade(lab, {"delay_ms": 150.0})


async def test_loss_past_the_loss_threshold_moves_traffic_and_it_comes_back(lab: Lab) -> None:
    await degrade(lab, {"loss": 0.3})
