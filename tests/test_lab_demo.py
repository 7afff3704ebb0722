"""The README's main job end to end: two gateways across the real lab, a cut link, a measured failover,
with IP traffic between hosts in network namespaces (root) and through the datagram API (anywhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scion_appliance.lab.demo import run_demo


def check(summary: dict, lines: list[str]) -> None:
    assert summary["path_after"] != summary["path_before"]
    assert summary["failovers"] >= 1
    assert summary["outage_ms"] < 1000
    assert summary["received"] >= summary["sent"] - summary["lost_during_failover"] - 2
    assert any("restored" in line for line in lines)
    assert lines[-1].startswith("summary:")


def test_demo_through_the_datagram_api(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_demo(str(tmp_path / "lab"), say=lines.append, ip=False)
    assert summary["transport"] == "datagram API"
    assert lines[0].startswith("IP mode needs TUN devices")
    check(summary, lines)


@pytest.mark.netns
def test_demo_with_ip_between_hosts_in_namespaces(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_demo(str(tmp_path / "lab"), say=lines.append, ip=True)
    assert summary["transport"].startswith("IP: UDP from 192.0.2.1")
    check(summary, lines)
