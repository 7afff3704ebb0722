"""The README's main job end to end: two gateways across the real lab, a cut link, a measured failover."""

from __future__ import annotations

from pathlib import Path

from scion_appliance.lab.demo import run_demo


def test_demo_fails_over_within_a_second(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_demo(str(tmp_path / "lab"), say=lines.append)
    assert summary["path_after"] != summary["path_before"]
    assert summary["failovers"] >= 1
    assert summary["outage_ms"] < 1000
    assert summary["received"] >= summary["sent"] - summary["lost_during_failover"] - 2
    assert any("restored" in line for line in lines)
    assert lines[-1].startswith("summary:")
