"""The lab demo (the README's main job): two gateways across the default lab, a cut, a failover.

Rules kept here:
- Everything is real: the lab's routers forward and verify every hop, the gateways handshake, seal and
  probe; the outage is measured as the gap in received sequence numbers.
- Progress is printed as it happens; the lab is always brought down at the end, even on error.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from typing import Any

import trio

from scion_appliance.lab.failover import gateway_pair
from scion_appliance.lab.lab import Lab
from scion_appliance.paths.quality import QualityConfig
from scion_appliance.paths.selection import SelectionPolicy

SEND_INTERVAL = 0.005


async def _scenario(lab: Lab, say: Callable[[str], None], probe_interval: float) -> dict[str, Any]:
    a_ia, b_ia = lab.leaves[0], lab.leaves[1]
    a, b = gateway_pair(
        lab,
        probe_interval,
        QualityConfig(down_after_lost=2, probe_timeout_min=0.03),
        SelectionPolicy(min_dwell=1.0),
    )
    received: list[tuple[float, int]] = []
    async with trio.open_nursery() as nursery, a, b:

        async def reader() -> None:
            while True:
                _, data = await b.receive()
                received.append((time.monotonic(), int(data)))

        nursery.start_soon(reader)
        say(
            f"gateways up: {a_ia} <-> {b_ia}; probing {len(lab.paths(a_ia, b_ia))} paths every {probe_interval * 1000:.0f} ms"
        )
        await trio.sleep(1.0)
        shown = sorted(a.paths(b_ia), key=lambda p: (p["hops"], p["rtt_ms"] or 1e9))
        for p in shown[:4]:
            say(f"  path {p['id'][:8]} via {' > '.join(p['ases'])}: {p['state']}, rtt {p['rtt_ms']} ms")
        if len(shown) > 4:
            say(f"  ... and {len(shown) - 4} longer paths")
        seq = 0
        sent_at: dict[int, float] = {}
        active = ""

        async def send_for(seconds: float) -> None:
            nonlocal seq, active
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    info = await a.send(b_ia, b"%d" % seq)
                    sent_at[seq] = time.monotonic()
                    active = info["path"]
                except Exception as e:  # no path for a moment: keep the sequence running, count the gap
                    say(f"  send {seq} failed: {e}")
                seq += 1
                await trio.sleep(SEND_INTERVAL)

        await send_for(1.0)
        first = active
        links = [name for name in lab.links_of(next(p for p in lab.paths(a_ia, b_ia) if p.id == first))]
        victim = links[len(links) // 2]
        say(f"steady traffic on path {first[:8]} ({a.reason(b_ia)}); cutting link {victim}")
        t_cut = time.monotonic()
        cut_seq = seq
        lab.cut(victim)
        await send_for(2.0)
        after = active
        say(f"traffic now on path {after[:8]} ({a.reason(b_ia)})")
        lab.restore(victim)
        say(f"link {victim} restored")
        await send_for(1.0)
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()

    got = sorted(s for _, s in received)
    lost_after_cut = [s for s in range(cut_seq, seq) if s not in set(got)]
    arrivals = {s: t for t, s in received}
    last_before = max((s for s in got if s < cut_seq), default=None)
    first_after = min(
        (s for s in got if s >= cut_seq and (lost_after_cut and s > lost_after_cut[0])), default=None
    )
    outage = 0.0
    if lost_after_cut and first_after is not None:
        outage = arrivals[first_after] - t_cut
    return {
        "sent": seq,
        "received": len(got),
        "lost_during_failover": len(lost_after_cut),
        "outage_ms": round(outage * 1000, 1) if lost_after_cut else 0.0,
        "path_before": first,
        "path_after": after,
        "failovers": a.counters["failovers"],
        "cut_link": victim,
        "last_before_cut": last_before,
    }


def run_demo(
    directory: str | None = None, probe_interval: float = 0.02, say: Callable[[str], None] = print
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scion-lab-demo-") as tmp:
        lab = Lab.create("default", directory or tmp)
        say(f"starting the default lab in {lab.directory}: {len(lab.ases)} ASes, {len(lab.links)} links")
        say(
            "traffic goes through the gateways' datagram API (TUN mode in namespaces: tests/test_ip_tunnel.py)"
        )
        lab.up()
        try:
            say(
                f"routers up; {len(lab.paths(lab.leaves[0], lab.leaves[1]))} paths between {lab.leaves[0]} and {lab.leaves[1]}"
            )
            summary = trio.run(_scenario, lab, say, probe_interval)
        finally:
            lab.down()
            say("lab stopped")
    say(
        f"summary: {summary['received']}/{summary['sent']} datagrams delivered; "
        f"failover {summary['path_before'][:8]} -> {summary['path_after'][:8]} after cutting {summary['cut_link']}; "
        f"outage {summary['outage_ms']} ms ({summary['lost_during_failover']} datagrams lost)"
    )
    return summary
