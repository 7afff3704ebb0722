"""topology.json reading: scionproto's own test file, round trips, and operator errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scion_appliance.errors import OperatorError
from scion_appliance.router import topology
from scion_appliance.router.topology import ENDHOST_PORT, parse_addr
from scion_appliance.scion.addr import IA

DATA = Path(__file__).parent / "data" / "scionproto-topology" / "topology.json"


def test_scionproto_testdata_file() -> None:
    # Values from scionproto/scion private/topology/json/testdata/topology.json (see tests/data/README.md).
    t = topology.load(DATA)
    assert t.ia == IA.parse("6-ff00:0:362")
    assert t.core is True
    assert t.mtu == 1472
    assert t.dispatched_ports == (0, 0)  # absent: nothing dispatched, everything to the end-host port
    assert sorted(t.border_routers) == ["borderrouter6-f00:0:362-1", "borderrouter6-f00:0:362-9"]
    br1 = t.border_routers["borderrouter6-f00:0:362-1"]
    assert br1.internal_addr == ("10.1.0.1", 0)
    i91 = br1.interfaces[91]
    assert (i91.local, i91.remote) == (("192.0.2.1", 4997), ("192.0.2.2", 4998))
    assert (i91.neighbor_ia, i91.link_to, i91.mtu) == (IA.parse("6-ff00:0:363"), "core", 1472)
    br9 = t.border_routers["borderrouter6-f00:0:362-9"]
    assert br9.internal_addr == ("2001:db8:a0b:12f0::2", 0)
    i32 = br9.interfaces[32]
    assert i32.local == ("2001:db8:a0b:12f0::1", 4997)
    assert (i32.link_to, i32.mtu) == ("child", 4430)
    assert t.owner_of(32) is br9 and t.owner_of(91) is br1 and t.owner_of(7) is None


def test_round_trip_through_to_json(tmp_path: Path) -> None:
    t = topology.load(DATA)
    out = tmp_path / "topology.json"
    out.write_text(json.dumps(topology.to_json(t)))
    again = topology.load(out)
    assert again == t
    assert (
        topology.to_json(again)["border_routers"]["borderrouter6-f00:0:362-9"]["interfaces"]["32"]["link_to"]
        == "CHILD"
    )


def test_router_selection_needs_a_name_when_several() -> None:
    t = topology.load(DATA)
    with pytest.raises(OperatorError, match="name the one this process runs"):
        t.router()
    assert t.router("borderrouter6-f00:0:362-1").name == "borderrouter6-f00:0:362-1"
    with pytest.raises(OperatorError, match="no border router named 'x'"):
        t.router("x")


@pytest.mark.parametrize(
    ("text", "want"),
    [("all", (1, 65535)), ("-", (0, 0)), ("", (0, 0)), ("31000-32767", (31000, 32767))],
)
def test_dispatched_ports(text: str, want: tuple[int, int]) -> None:
    doc = {"isd_as": "1-ff00:0:110", "dispatched_ports": text}
    t = topology.parse(doc)
    assert t.dispatched_ports == want
    lo, hi = want
    if lo:
        assert t.dispatched(lo) == lo and t.dispatched(hi) == hi
    assert t.dispatched(30000) == (30000 if lo and lo <= 30000 <= hi else ENDHOST_PORT)


def test_addresses() -> None:
    assert parse_addr("127.0.0.1:30042") == ("127.0.0.1", 30042)
    assert parse_addr("[::1]:5") == ("::1", 5)
    for bad in ("127.0.0.1", "::1:5", "host:1", "127.0.0.1:70000", "[::1]5"):
        with pytest.raises(ValueError):
            parse_addr(bad)


def _base() -> dict[str, Any]:
    return json.loads(DATA.read_text())


@pytest.mark.parametrize(
    ("mutate", "key", "fix"),
    [
        (lambda d: d.pop("isd_as"), "isd_as: missing", "add 'isd_as'"),
        (lambda d: d.update(isd_as="1-xyz"), "isd_as", "write it like 1-ff00:0:110"),
        (lambda d: d.update(attributes=["primary"]), "attributes[0]", 'the only attribute is "core"'),
        (lambda d: d.update(dispatched_ports="9-1"), "dispatched_ports", "fix the range"),
        (
            lambda d: d["border_routers"]["borderrouter6-f00:0:362-1"].update(internal_addr="10.1.0.1"),
            "border_routers.borderrouter6-f00:0:362-1.internal_addr",
            "write it as IP:PORT",
        ),
        (
            lambda d: d["border_routers"]["borderrouter6-f00:0:362-1"]["interfaces"]["91"].update(
                link_to="UP"
            ),
            "border_routers.borderrouter6-f00:0:362-1.interfaces.91.link_to",
            "use CORE, PARENT, CHILD or PEER",
        ),
        (
            lambda d: d["border_routers"]["borderrouter6-f00:0:362-9"]["interfaces"].update(
                {"91": d["border_routers"]["borderrouter6-f00:0:362-9"]["interfaces"]["32"]}
            ),
            "interfaces.91",
            "ids are per AS",
        ),
        (
            lambda d: d["border_routers"]["borderrouter6-f00:0:362-1"]["interfaces"]["91"].pop("underlay"),
            "interfaces.91.underlay: missing",
            "add 'underlay'",
        ),
    ],
)
def test_errors_name_file_key_and_fix(tmp_path: Path, mutate: Any, key: str, fix: str) -> None:
    doc = _base()
    mutate(doc)
    f = tmp_path / "topology.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(OperatorError) as e:
        topology.load(f)
    msg = str(e.value)
    assert msg.startswith(str(f)), msg
    assert key in msg and fix in msg, msg


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(OperatorError, match="does not exist"):
        topology.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  'isd_as': 1\n}")
    with pytest.raises(OperatorError, match=r"line 2 column 3: not valid JSON"):
        topology.load(bad)


def test_deprecated_attributes_are_ignored() -> None:
    t = topology.parse({"isd_as": "1-ff00:0:110", "attributes": ["authoritative", "issuing", "voting"]})
    assert t.core is False
