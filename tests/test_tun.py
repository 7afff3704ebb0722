"""TUN devices: opening and configuring them in a namespace of the test's own, batch reads of what the
kernel routes into them, batch writes the kernel delivers, and the operator errors.

Addresses are TEST-NET-1 (192.0.2.0/24) inside namespaces the tests create and delete."""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator

import pytest

from scion_appliance import netns, tun
from scion_appliance._fast import tunio
from scion_appliance.errors import OperatorError

STRIDE = 2048
TUN_ADDR, PEER = "192.0.2.1", "192.0.2.2"


def _checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 1) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + payload


def _udp4(src: str, sport: int, dst: str, dport: int, data: bytes) -> bytes:
    # UDP checksum 0 means "none" over IPv4 (RFC 768); the kernel accepts it.
    return _ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data)


def _icmp_echo_request(src: str, dst: str, ident: int, seq: int, data: bytes) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
    return _ipv4(src, dst, 1, body)


@pytest.fixture
def dev(requires_root_netns: None) -> Iterator[tun.TunDevice]:
    """A TUN device ``satun0`` with 192.0.2.1/24, up, in a fresh namespace."""
    if tun.unavailable_reason() is not None:
        pytest.skip(f"tun: {tun.unavailable_reason()}")
    with netns.scratch() as ns, tun.TunDevice.open("satun0", netns=ns, mtu=1500,
                                                    addresses=[f"{TUN_ADDR}/24"]) as d:
        yield d


def _socket_in(d: tun.TunDevice, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    assert d.netns is not None
    with netns.entered(d.netns):
        return socket.socket(socket.AF_INET, kind)


def _read_ipv4(d: tun.TunDevice, want: int, stride: int = STRIDE) -> list[bytes]:
    """Reads until ``want`` IPv4 packets came (the kernel also sends IPv6 router solicitations)."""
    buf, lengths = bytearray(64 * stride), array("I", [0]) * 64
    got: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(got) < want and time.monotonic() < deadline:
        n = d.read_batch(buf, stride, lengths)
        if n == 0:
            time.sleep(0.002)
        for i in range(n):
            pkt = bytes(buf[i * stride : i * stride + min(lengths[i], stride)])
            if pkt[0] >> 4 == 4:
                got.append(pkt)
    return got


@pytest.mark.netns
def test_device_is_configured_in_its_namespace(dev: tun.TunDevice) -> None:
    assert dev.name == "satun0" and dev.netns is not None
    assert dev.mtu == 1500
    out = netns.ip("-o", "addr", "show", "dev", dev.name, netns=dev.netns)
    assert f"{TUN_ADDR}/24" in out
    assert "UP" in netns.ip("-o", "link", "show", "dev", dev.name, netns=dev.netns)
    assert not netns.link_exists("satun0")  # not in the root namespace
    dev.set_mtu(1280)
    assert dev.mtu == 1280


@pytest.mark.netns
def test_udp_sent_into_the_subnet_is_read_as_raw_ip(dev: tun.TunDevice) -> None:
    with _socket_in(dev) as s:
        s.bind((TUN_ADDR, 40000))
        payloads = [b"datagram %02d " % i + bytes(i * 30) for i in range(20)]
        for p in payloads:
            s.sendto(p, (PEER, 9999))
        packets = _read_ipv4(dev, 20)
    assert len(packets) == 20
    for p, pkt in zip(payloads, packets, strict=True):
        assert pkt[9] == 17  # UDP
        assert socket.inet_ntoa(pkt[12:16]) == TUN_ADDR and socket.inet_ntoa(pkt[16:20]) == PEER
        ihl = (pkt[0] & 0xF) * 4
        sport, dport, ulen = struct.unpack_from("!HHH", pkt, ihl)
        assert (sport, dport, ulen) == (40000, 9999, 8 + len(p))
        assert pkt[ihl + 8 :] == p
        assert _checksum(pkt[:ihl]) == 0  # the kernel's header checksum verifies


@pytest.mark.netns
def test_batch_read_takes_several_packets_per_call(dev: tun.TunDevice) -> None:
    with _socket_in(dev) as s:
        for i in range(10):
            s.sendto(b"%d" % i, (PEER, 9))
    buf, lengths = bytearray(32 * STRIDE), array("I", [0]) * 32
    n = dev.read_batch(buf, STRIDE, lengths)
    assert n >= 10  # the kernel queued them as they were sent; one call drains the queue
    assert dev.read_batch(buf, STRIDE, lengths) == 0
    # max_count bounds a batch below its size.
    with _socket_in(dev) as s:
        for i in range(5):
            s.sendto(b"%d" % i, (PEER, 9))
    assert dev.read_batch(buf, STRIDE, lengths, 2) == 2
    assert dev.read_batch(buf, STRIDE, lengths) >= 3


@pytest.mark.netns
def test_packet_longer_than_the_slot_is_flagged(dev: tun.TunDevice) -> None:
    with _socket_in(dev) as s:
        s.sendto(bytes(500), (PEER, 9))
        s.sendto(b"small", (PEER, 9))
    got: list[tuple[int, bytes]] = []
    buf, lengths = bytearray(8 * 256), array("I", [0]) * 8
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        n = dev.read_batch(buf, 256, lengths)
        got += [(lengths[i], bytes(buf[i * 256 : i * 256 + 256])) for i in range(n) if buf[i * 256] >> 4 == 4]
    assert [length for length, _ in got] == [257, 33]  # 528-byte packet: stride + 1; then 20+8+5
    assert got[1][1][28:33] == b"small"


@pytest.mark.netns
def test_written_udp_packets_reach_a_socket(dev: tun.TunDevice) -> None:
    with _socket_in(dev) as s:
        s.bind((TUN_ADDR, 41000))
        s.settimeout(5)
        n = 8
        buf, lengths, offsets = bytearray(n * STRIDE), array("I", [0]) * n, array("I", [0]) * n
        for i in range(n):
            pkt = _udp4(PEER, 5555, TUN_ADDR, 41000, b"from the tun %d" % i)
            offsets[i] = 64 * (i % 3)  # headroom as a gateway leaves it after deframing
            start = i * STRIDE + offsets[i]
            buf[start : start + len(pkt)] = pkt
            lengths[i] = len(pkt)
        assert dev.write_batch(buf, STRIDE, lengths, offsets, n) == n
        got = [s.recvfrom(100) for _ in range(n)]
    assert got == [(b"from the tun %d" % i, (PEER, 5555)) for i in range(n)]


@pytest.mark.netns
def test_written_echo_request_is_answered_back_through_the_tun(dev: tun.TunDevice) -> None:
    req = _icmp_echo_request(PEER, TUN_ADDR, ident=0x5A17, seq=7, data=b"ping over tun")
    dev.write(req)
    replies = [p for p in _read_ipv4(dev, 1) if p[9] == 1]
    assert len(replies) == 1
    rep = replies[0]
    assert socket.inet_ntoa(rep[12:16]) == TUN_ADDR and socket.inet_ntoa(rep[16:20]) == PEER
    icmp = rep[20:]
    assert icmp[0] == 0 and struct.unpack_from("!HH", icmp, 4) == (0x5A17, 7)  # echo reply, same id/seq
    assert icmp[8:] == b"ping over tun" and _checksum(icmp) == 0


@pytest.mark.netns
def test_write_stops_at_a_malformed_packet_and_reports_it_next(dev: tun.TunDevice) -> None:
    good = _udp4(PEER, 1, TUN_ADDR, 9, b"x")
    packets = [good, b"\x00not ip", good]
    buf, lengths = bytearray(3 * STRIDE), array("I", [0]) * 3
    for i, p in enumerate(packets):
        buf[i * STRIDE : i * STRIDE + len(p)] = p
        lengths[i] = len(p)
    fd = dev.fileno()
    assert tunio.write_batch(fd, buf, STRIDE, lengths, None, 3) == 1
    with pytest.raises(OSError) as e:
        tunio.write_batch(fd, buf, STRIDE, lengths, None, 2, 1)
    assert e.value.errno == errno.EINVAL  # tun refuses a packet that is neither IPv4 nor IPv6
    assert tunio.write_batch(fd, buf, STRIDE, lengths, None, 1, 2) == 1
    order = array("I", [2, 0])
    assert tunio.write_batch_indexed(fd, buf, STRIDE, lengths, None, order, 2) == 2
    lengths[0] = STRIDE + 1
    with pytest.raises(OSError) as e:
        tunio.write_batch(fd, buf, STRIDE, lengths, None, 1)
    assert e.value.errno == errno.EINVAL


@pytest.mark.netns
def test_empty_device_reads_zero_and_closed_device_is_gone(dev: tun.TunDevice) -> None:
    buf, lengths = bytearray(4 * STRIDE), array("I", [0]) * 4
    _read_ipv4(dev, 0)
    while dev.read_batch(buf, STRIDE, lengths):  # drain router solicitations, if any
        pass
    assert dev.read_batch(buf, STRIDE, lengths) == 0
    fd = dev.fileno()
    dev.close()
    assert dev.closed
    assert dev.netns is not None and not netns.link_exists("satun0", netns=dev.netns)
    with pytest.raises(ValueError, match="closed"):
        dev.fileno()
    with pytest.raises(OSError) as e:
        tunio.read_batch(fd, buf, STRIDE, lengths)
    assert e.value.errno == errno.EBADF


@pytest.mark.netns
def test_taken_name_is_an_operator_error(dev: tun.TunDevice) -> None:
    with pytest.raises(OperatorError, match="taken"):
        tun.TunDevice.open("satun0", netns=dev.netns)


@pytest.mark.netns
def test_kernel_numbered_name_and_routes(requires_root_netns: None) -> None:
    with netns.scratch() as ns, tun.TunDevice.open(
        "sagw%d", netns=ns, addresses=["192.0.2.1/32"], routes=["203.0.113.0/24"]
    ) as d:
        assert d.name == "sagw0"
        routes = netns.ip("route", "show", netns=ns)
        assert "203.0.113.0/24 dev sagw0" in routes
        with _socket_in(d) as s:
            s.sendto(b"routed", ("203.0.113.9", 7))
        assert any(socket.inet_ntoa(p[16:20]) == "203.0.113.9" for p in _read_ipv4(d, 1))


@pytest.mark.netns
def test_txqueuelen_default_and_explicit(requires_root_netns: None) -> None:
    # The kernel gives a TUN device 500; open() sets the module's default, or what it is told.
    with netns.scratch() as ns:
        with tun.TunDevice.open("satun0", netns=ns) as d:
            assert d.txqueuelen == tun.TXQUEUELEN
        with tun.TunDevice.open("satun0", netns=ns, txqueuelen=4000) as d:
            assert d.txqueuelen == 4000
        with tun.TunDevice.open("satun0", netns=ns, txqueuelen=None) as d:
            assert d.txqueuelen == 500
        with pytest.raises(ValueError, match="txqueuelen"):
            tun.TunDevice.open("satun0", netns=ns, txqueuelen=0)


def test_missing_device_node_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tun, "TUN_PATH", "/nonexistent/net/tun")
    assert "modprobe tun" in (tun.unavailable_reason() or "")
    with pytest.raises(OperatorError, match=r"missing.*modprobe tun"):
        tun.TunDevice.open("satun9")


def test_bad_name_and_mtu_are_refused_before_any_syscall() -> None:
    with pytest.raises(ValueError, match="interface name"):
        tun.TunDevice.open("a-much-too-long-name")
    d = tun.TunDevice(-1, "x")
    with pytest.raises(ValueError, match="MTU"):
        d.set_mtu(20)


@pytest.mark.netns
def test_without_privilege_the_error_says_run_as_root(requires_root_netns: None) -> None:
    # A child drops to the "nobody" user after importing, then tries: /dev/net/tun is root-only here,
    # and TUNSETIFF needs CAP_NET_ADMIN anyway.
    code = (
        "import os\n"
        "from scion_appliance import tun\n"
        "from scion_appliance.errors import OperatorError\n"
        "os.setegid(65534); os.seteuid(65534)\n"
        "try:\n"
        "    tun.TunDevice.open('satun8')\n"
        "except OperatorError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr
    assert "CAP_NET_ADMIN" in done.stdout and "root" in done.stdout


@pytest.mark.netns
def test_ipv6_packets_cross_the_tun_both_ways(dev: tun.TunDevice) -> None:
    dev.add_address("2001:db8::1/64")  # nodad: usable at once
    assert dev.netns is not None
    with netns.entered(dev.netns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with s:
        s.bind(("2001:db8::1", 42000))
        s.settimeout(5)
        s.sendto(b"six", ("2001:db8::2", 9))
        buf, lengths = bytearray(16 * STRIDE), array("I", [0]) * 16
        found = b""
        deadline = time.monotonic() + 5
        while not found and time.monotonic() < deadline:
            for i in range(dev.read_batch(buf, STRIDE, lengths)):
                pkt = bytes(buf[i * STRIDE : i * STRIDE + lengths[i]])
                if pkt[0] >> 4 == 6 and pkt[6] == 17:  # IPv6 carrying UDP (not the kernel's ICMPv6)
                    found = pkt
        assert found[40 + 8 :] == b"six"
        assert socket.inet_ntop(socket.AF_INET6, found[24:40]) == "2001:db8::2"
        # Answer: swap addresses and ports; UDP over IPv6 needs its checksum (RFC 8200 8.1).
        src, dst = found[24:40], found[8:24]
        data = b"six back"
        udp = struct.pack("!HHHH", 9, 42000, 8 + len(data), 0) + data
        pseudo = src + dst + struct.pack("!IxxxB", len(udp), 17)
        udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp) or 0xFFFF) + udp[8:]
        ip6 = struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + src + dst + udp
        out, out_len = bytearray(ip6), array("I", [len(ip6)])
        assert dev.write_batch(out, len(ip6), out_len, None, 1) == 1
        assert s.recvfrom(100)[:2] == (b"six back", ("2001:db8::2", 9, 0, 0))


# -- virtio-net header offloads: split on read, coalesce on write ---------------------------------------
# Reference packets are built here field by field (RFC 791/793/768/8200 layouts, RFC 1071 checksums) and
# every checksum is verified with that independent sum, not with the C code under test.

TCP_ACK, TCP_PSH, TCP_FIN, TCP_SYN, TCP_CWR = 0x10, 0x08, 0x01, 0x02, 0x80
SEQPACKET_MAX = 70000


def _pseudo(ip: bytes, proto: int, l4len: int) -> bytes:
    if ip[0] >> 4 == 4:
        return ip[12:20] + struct.pack("!BBH", 0, proto, l4len)
    return ip[8:40] + struct.pack("!IxxxB", l4len, proto)


def _l4_checksum_ok(pkt: bytes) -> bool:
    ihl = (pkt[0] & 0xF) * 4 if pkt[0] >> 4 == 4 else 40
    proto = pkt[9] if pkt[0] >> 4 == 4 else pkt[6]
    return _checksum(_pseudo(pkt, proto, len(pkt) - ihl) + pkt[ihl:]) == 0


def _ip(v: int, src: str, dst: str, proto: int, l4: bytes, ident: int = 1) -> bytes:
    if v == 4:
        return _ipv4_df(src, dst, proto, l4, ident)
    fam = socket.AF_INET6
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, socket.inet_pton(fam, src),
                       socket.inet_pton(fam, dst)) + l4


def _ipv4_df(src: str, dst: str, proto: int, payload: bytes, ident: int) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + payload


def _with_l4_checksum(pkt: bytes, proto: int) -> bytes:
    ihl = (pkt[0] & 0xF) * 4 if pkt[0] >> 4 == 4 else 40
    at = ihl + (16 if proto == 6 else 6)
    c = _checksum(_pseudo(pkt, proto, len(pkt) - ihl) + pkt[ihl:])
    if proto == 17 and c == 0:
        c = 0xFFFF
    return pkt[:at] + struct.pack("!H", c) + pkt[at + 2:]


def _tcp(v: int, seq: int, data: bytes, flags: int = TCP_ACK, ident: int = 1, sport: int = 40000,
         opts: bytes = b"\x01\x01\x08\x0a\x00\x00\x00\x07\x00\x00\x00\x09") -> bytes:
    src, dst = ("192.0.2.2", "192.0.2.1") if v == 4 else ("2001:db8::2", "2001:db8::1")
    hdr = struct.pack("!HHIIBBHHH", sport, 5201, seq, 777, (5 + len(opts) // 4) << 4, flags, 500, 0, 0) + opts
    return _with_l4_checksum(_ip(v, src, dst, 6, hdr + data, ident), 6)


def _udp(v: int, data: bytes, ident: int = 1, sport: int = 40000) -> bytes:
    src, dst = ("192.0.2.2", "192.0.2.1") if v == 4 else ("2001:db8::2", "2001:db8::1")
    return _with_l4_checksum(_ip(v, src, dst, 17, struct.pack("!HHHH", sport, 5201, 8 + len(data), 0) + data,
                                 ident), 17)


def _coalesce(packets: list[bytes], udp_segs: int = 64) -> list[bytes]:
    """What write_vnet writes, one message per writev (a SOCK_SEQPACKET pair keeps the boundaries)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        done, failed, _, writes = tunio.write_vnet(a.fileno(), packets, udp_segs)
        assert (done, failed) == (len(packets), 0)
        b.setblocking(False)
        out = [b.recv(SEQPACKET_MAX) for _ in range(writes)]
    return out


def _vnet(msg: bytes) -> tuple[int, int, int, int, int, int]:
    return struct.unpack_from("<BBHHHH", msg)  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset


@pytest.mark.parametrize(("cap", "sizes"), [(64, [40]), (16, [16, 16, 8]), (1, [1] * 40)])
def test_udp_runs_capped_tcp_not(cap: int, sizes: list[int]) -> None:
    # 40 equal datagrams of one flow: writes of at most `cap` (1: each alone, with a zero header).
    dgrams = [_udp(4, bytes([i]) * 100, ident=i + 1) for i in range(40)]
    msgs = _coalesce(dgrams, udp_segs=cap)
    counts = [(len(m) - tunio.VNET_HDR_LEN - 28) // 100 for m in msgs]
    assert counts == sizes
    assert all(_vnet(m)[1] == (5 if k > 1 else 0) for m, k in zip(msgs, counts, strict=True))


@pytest.mark.parametrize("v", [4, 6])
def test_tcp_segments_coalesce_into_one_gso_write_and_split_back(v: int) -> None:
    mss = 1380
    data = os.urandom(mss * 10 + 333)
    segs = [_tcp(v, 1000 + k, data[k: k + mss], ident=50 + i,
                 flags=TCP_ACK | (TCP_PSH if k + mss >= len(data) else 0))
            for i, k in enumerate(range(0, len(data), mss))]
    assert all(_l4_checksum_ok(s) for s in segs)
    (msg,) = _coalesce(segs)
    flags, gso, hdr_len, gso_size, cstart, coff = _vnet(msg)
    iphl = 20 if v == 4 else 40
    assert (flags, gso, hdr_len, gso_size, cstart, coff) == (1, 1 if v == 4 else 4, iphl + 32, mss, iphl, 16)
    sup = msg[10:]
    assert len(sup) == iphl + 32 + len(data) and sup[iphl + 32:] == data
    if v == 4:
        assert struct.unpack_from("!H", sup, 2)[0] == len(sup) and _checksum(sup[:20]) == 0
    else:
        assert struct.unpack_from("!H", sup, 4)[0] == len(sup) - 40
    # The partial checksum is the pseudo-header sum (not complemented), as the kernel's TSO expects.
    l4len = len(sup) - iphl
    assert struct.unpack_from("!H", sup, iphl + 16)[0] == ~_checksum(_pseudo(sup, 6, l4len)) & 0xFFFF
    assert sup[iphl + 13] == TCP_ACK | TCP_PSH  # the last segment's PSH rides on the super-packet
    # Split as a TSO read: the original segments byte for byte (IPv4 ids continue from the first).
    assert tunio.split(msg) == segs


@pytest.mark.parametrize("v", [4, 6])
def test_udp_datagrams_coalesce_and_split_back(v: int) -> None:
    dgrams = [_udp(v, os.urandom(1392), ident=9 + i) for i in range(7)] + [_udp(v, b"short tail", ident=16)]
    (msg,) = _coalesce(dgrams)
    flags, gso, hdr_len, gso_size, cstart, coff = _vnet(msg)
    iphl = 20 if v == 4 else 40
    assert (flags, gso, hdr_len, gso_size, cstart, coff) == (1, 5, iphl + 8, 1392, iphl, 6)
    assert struct.unpack_from("!H", msg, 10 + iphl + 4)[0] == len(msg) - 10 - iphl  # UDP length: all of it
    assert tunio.split(msg) == dgrams


def test_what_the_kernel_would_not_merge_is_written_alone_in_order() -> None:
    mss = 100
    a = [_tcp(4, 1 + mss * i, bytes([i]) * mss, ident=i) for i in range(4)]
    b = [_tcp(4, 5 + mss * i, bytes([50 + i]) * mss, ident=i, sport=40001) for i in range(3)]
    syn = _tcp(4, 0, b"", flags=TCP_SYN, sport=40002)
    gap = _tcp(4, 1 + mss * 9, b"g" * mss, ident=9)  # flow a, out of sequence
    other_opts = _tcp(4, 1 + mss * 10, b"o" * mss, opts=b"\x01" * 12)  # flow a: its seq after gap
    psh = _tcp(4, 5 + mss * 3, b"p" * 10, flags=TCP_ACK | TCP_PSH, ident=3, sport=40001)  # ids go on
    after_psh = _tcp(4, 5 + mss * 3 + 10, b"q" * mss, sport=40001)
    # Interleaved flows still coalesce per flow; every flow keeps its order.
    packets = [a[0], b[0], a[1], b[1], syn, a[2], b[2], a[3], gap, other_opts, psh, after_psh]
    msgs = _coalesce(packets)
    split = [tunio.split(m) for m in msgs]
    assert split == [a, [*b, psh], [syn], [gap], [other_opts], [after_psh]]
    assert [_vnet(m)[1] for m in msgs] == [1, 1, 0, 0, 0, 0]
    assert all(_vnet(m) == (0, 0, 0, 0, 0, 0) for m in msgs[2:])


def test_split_finishes_a_partial_checksum_and_refuses_what_it_cannot_make_valid() -> None:
    pkt = _udp(4, b"needs a checksum")
    partial = pkt[:26] + struct.pack("!H", ~_checksum(_pseudo(pkt, 17, len(pkt) - 20)) & 0xFFFF) + pkt[28:]
    hdr = struct.pack("<BBHHHH", 1, 0, 0, 0, 20, 6)
    assert tunio.split(hdr + partial) == [pkt]
    with pytest.raises(ValueError):  # TCP GSO type over a UDP packet
        tunio.split(struct.pack("<BBHHHH", 1, 1, 28, 100, 20, 16) + pkt)
    with pytest.raises(ValueError):  # checksum field beyond the packet
        tunio.split(struct.pack("<BBHHHH", 1, 0, 0, 0, 20, 600) + pkt)
    # A segment that would not fit the slot is refused rather than cut.
    big = _tcp(4, 1, bytes(3000))
    with pytest.raises(ValueError):
        tunio.split(struct.pack("<BBHHHH", 1, 1, 52, 2500, 20, 16) + big, stride=2048)


@pytest.fixture
def odev(requires_root_netns: None) -> Iterator[tun.TunDevice]:
    """An offload TUN device (virtio-net header, TSO/USO) ``satun0`` with 192.0.2.1/24 in a fresh namespace."""
    if tun.unavailable_reason() is not None:
        pytest.skip(f"tun: {tun.unavailable_reason()}")
    with netns.scratch() as ns, tun.TunDevice.open("satun0", netns=ns, mtu=1500, addresses=[f"{TUN_ADDR}/24"],
                                                    offload=True) as d:
        yield d


UDP_SEGMENT = 103


@pytest.mark.netns
def test_offload_device_reads_a_uso_send_as_valid_datagrams(odev: tun.TunDevice) -> None:
    assert odev.vnet_hdr and odev.offloads & tun.TUN_F_TSO4
    if not odev.offloads & tun.TUN_F_USO4:
        pytest.skip("kernel without TUN USO (6.2+)")
    payload = os.urandom(1000 * 5 + 123)
    with _socket_in(odev) as s:
        s.bind((TUN_ADDR, 40000))
        s.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1000)
        s.sendto(payload, (PEER, 9999))  # one send, one super-packet into the TUN
        packets = [p for p in _read_ipv4(odev, 6) if p[9] == 17]
    assert [len(p) - 28 for p in packets] == [1000] * 5 + [123]
    assert b"".join(p[28:] for p in packets) == payload
    assert all(_checksum(p[:20]) == 0 and _l4_checksum_ok(p) for p in packets)
    assert odev.reader is not None and odev.reader.dropped == 0


@pytest.mark.netns
def test_offload_device_delivers_a_coalesced_write_as_datagrams(odev: tun.TunDevice) -> None:
    with _socket_in(odev) as s:
        s.bind((TUN_ADDR, 41000))
        s.settimeout(5)
        dgrams = [_udp4(PEER, 5555, TUN_ADDR, 41000, bytes([i]) * 1200) for i in range(10)]
        dgrams = [_with_l4_checksum(d, 17) for d in dgrams]
        done, failed, err, writes = tunio.write_vnet(odev.fileno(), dgrams)
        assert (done, failed, err, writes) == (10, 0, 0, 1)
        got = [s.recvfrom(2000) for _ in range(10)]
        odev.write(_udp4(PEER, 5555, TUN_ADDR, 41000, b"alone"))  # a plain write behind a zero header
        assert s.recvfrom(100)[0] == b"alone"
    assert got == [(bytes([i]) * 1200, (PEER, 5555)) for i in range(10)]
