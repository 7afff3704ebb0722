"""Network-namespace helpers: names, creation and cleanup, veth links, running and entering.

Everything that creates a namespace is ``@pytest.mark.netns`` (root only); traffic stays on the
TEST-NET-2 addresses of the namespaces the test makes itself.
"""

from __future__ import annotations

import os
import socket
import sys
import threading

import pytest

from scion_appliance import netns
from scion_appliance.errors import OperatorError


def _netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.mark.parametrize("name", ["veth0", "a", "x" * 15, "sa-tun.1"])
def test_interface_names_the_kernel_accepts(name: str) -> None:
    assert netns.check_ifname(name) == name


@pytest.mark.parametrize("name", ["", "x" * 16, "a/b", "a b", "a:1", ".", ".."])
def test_interface_names_the_kernel_rejects(name: str) -> None:
    # IFNAMSIZ is 16 with the NUL; '/' and ':' and whitespace are refused by dev_valid_name().
    with pytest.raises(ValueError):
        netns.check_ifname(name)


def test_unique_names_differ() -> None:
    names = {netns.unique_name() for _ in range(100)}
    assert len(names) == 100
    assert all(str(os.getpid()) in n for n in names)


def test_entering_a_missing_namespace_is_an_operator_error() -> None:
    with pytest.raises(OperatorError, match="does not exist"), netns.entered("sa-no-such-netns"):
        pass


@pytest.mark.netns
def test_scratch_namespace_is_deleted_even_after_an_error() -> None:
    seen = ""
    with pytest.raises(RuntimeError), netns.scratch() as name:
        seen = name
        assert netns.exists(name)
        assert name in netns.list_names()
        assert netns.link_exists("lo", netns=name)
        raise RuntimeError("boom")
    assert seen and not netns.exists(seen)


@pytest.mark.netns
def test_failed_ip_command_names_the_command() -> None:
    with pytest.raises(OperatorError, match=r"`.*ip -n sa-no-such-netns link show"):
        netns.ip("link", "show", netns="sa-no-such-netns")


@pytest.mark.netns
def test_entered_moves_only_the_calling_thread_and_moves_it_back() -> None:
    home = _netns_inode()
    with netns.scratch() as name:
        target = os.stat(netns.NETNS_DIR / name).st_ino
        other: list[int] = []
        inside, looked = threading.Event(), threading.Event()

        def look() -> None:  # a thread that exists before the switch stays where it was
            inside.wait(10)
            other.append(_netns_inode())
            looked.set()

        t = threading.Thread(target=look)
        t.start()
        with netns.entered(name):
            assert _netns_inode() == target
            inside.set()
            assert looked.wait(10)
            # A socket made inside sees the namespace's own interfaces only.
            assert [n for _, n in socket.if_nameindex()] == ["lo"]
        t.join()
        assert other == [home]
        assert _netns_inode() == home


@pytest.mark.netns
def test_run_and_popen_execute_inside() -> None:
    with netns.scratch() as name:
        netns.add_address("lo", "192.0.2.77/32", netns=name)
        out = netns.run(name, ["ip", "-o", "addr", "show", "dev", "lo"]).stdout
        assert "192.0.2.77/32" in out
        with pytest.raises(OperatorError, match="exited 3"):
            netns.run(name, [sys.executable, "-c", "import sys; sys.exit(3)"])
        proc = netns.popen(
            name,
            [sys.executable, "-c", "import socket; print(sorted(n for _, n in socket.if_nameindex()))"],
            stdout=-1,
            text=True,
        )
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert out.strip() == "['lo']"


@pytest.mark.netns
def test_veth_between_namespaces_carries_udp(netns_pair: netns.LinkedPair) -> None:
    pair = netns_pair
    assert (pair.addr_a, pair.addr_b) == ("198.51.100.1", "198.51.100.2")
    with netns.entered(pair.a):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with netns.entered(pair.b):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind((pair.addr_a, 0))
        rx.settimeout(5)
        tx.sendto(b"across the veth", (pair.addr_a, rx.getsockname()[1]))
        data, src = rx.recvfrom(100)
        assert data == b"across the veth"
        assert src[0] == pair.addr_b
        # The root namespace has no route to TEST-NET-2: the link exists only between the two.
        assert not netns.link_exists(pair.dev_a)


@pytest.mark.netns
def test_linked_pair_cleans_up_both_namespaces() -> None:
    with pytest.raises(KeyError), netns.linked_pair("203.0.113.1/30", "203.0.113.2/30") as pair:
        names = (pair.a, pair.b)
        assert netns.link_exists("veth0", netns=pair.a) and netns.link_exists("veth0", netns=pair.b)
        raise KeyError("x")
    assert not any(netns.exists(n) for n in names)


@pytest.mark.netns
def test_veth_mtu_and_move_link() -> None:
    with netns.scratch() as a, netns.scratch() as b:
        netns.add_veth("sat0", "sat1", netns_a=a, mtu=1300, up=False)
        assert netns.link_exists("sat0", netns=a)
        assert netns.link_exists("sat1")  # created here (root namespace), then moved below
        netns.move_link("sat1", b)
        assert netns.link_exists("sat1", netns=b) and not netns.link_exists("sat1")
        out = netns.ip("-o", "link", "show", "dev", "sat1", netns=b)
        assert "mtu 1300" in out
        netns.set_mtu("sat1", 1280, netns=b)
        assert "mtu 1280" in netns.ip("-o", "link", "show", "dev", "sat1", netns=b)
