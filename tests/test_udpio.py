"""Batched UDP I/O on loopback (127.0.0.1 and ::1): round trips, addresses, partial and empty reads,
truncation, partial sends and errors, and the address-record helpers."""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import socket
import struct
from array import array
from collections.abc import Iterator

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from scion_appliance._fast import udpio

STRIDE = 2048
LOOPBACKS = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]


def _udp(family: int, host: str, rcvbuf: int = 4 << 20) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((host, 0))
    s.setblocking(False)
    return s


@pytest.fixture(params=LOOPBACKS, ids=["ipv4", "ipv6"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    family, host = request.param
    tx, rx = _udp(family, host), _udp(family, host)
    with tx, rx:
        yield tx, rx


class Batch:
    """The shared slot layout: one buffer, a uint32 length per slot, an address record per slot."""

    def __init__(self, n: int, stride: int = STRIDE) -> None:
        self.n, self.stride = n, stride
        self.buf = bytearray(n * stride)
        self.lengths = array("I", [0]) * n
        self.addrs = udpio.new_addrs(n)

    def put(self, i: int, data: bytes, offset: int = 0) -> None:
        start = i * self.stride + offset
        self.buf[start : start + len(data)] = data
        self.lengths[i] = len(data)

    def get(self, i: int) -> bytes:
        start = i * self.stride
        return bytes(self.buf[start : start + min(self.lengths[i], self.stride)])


def _payloads(n: int, seed: int, low: int = 1, high: int = 1400) -> list[bytes]:
    rng = random.Random(seed)
    return [bytes([i & 0xFF]) + rng.randbytes(rng.randint(low, high) - 1) for i in range(n)]


def _recv_all(rx: socket.socket, want: int, batch: Batch) -> list[tuple[bytes, tuple[str, int]]]:
    got: list[tuple[bytes, tuple[str, int]]] = []
    for _ in range(1000):  # loopback delivery is synchronous; the bound only guards a broken kernel
        n = udpio.recv_batch(rx.fileno(), batch.buf, batch.stride, batch.lengths, batch.addrs)
        got += [(batch.get(i), udpio.addr_get(batch.addrs, i)) for i in range(n)]
        if len(got) >= want:
            break
    return got


def test_round_trip_of_64_varied_datagrams(pair: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = pair
    data = _payloads(64, seed=1)
    out = Batch(64)
    for i, d in enumerate(data):
        out.put(i, d)
    dest = udpio.addr_pack(*rx.getsockname()[:2])
    assert udpio.send_batch(tx.fileno(), out.buf, STRIDE, out.lengths, None, dest, 64) == 64
    inb = Batch(64)
    assert udpio.recv_batch(rx.fileno(), inb.buf, STRIDE, inb.lengths, inb.addrs) == 64
    assert [inb.get(i) for i in range(64)] == data
    assert list(inb.lengths) == [len(d) for d in data]
    src = tx.getsockname()[:2]
    assert all(udpio.addr_get(inb.addrs, i) == src for i in range(64))
    # The record of a received source equals the record packed from the same endpoint.
    assert udpio.addr_bytes(inb.addrs, 5) == udpio.addr_pack(*src)
    assert udpio.recv_batch(rx.fileno(), inb.buf, STRIDE, inb.lengths, inb.addrs) == 0


def test_nothing_waiting_returns_zero(pair: tuple[socket.socket, socket.socket]) -> None:
    _, rx = pair
    b = Batch(8)
    assert udpio.recv_batch(rx.fileno(), b.buf, STRIDE, b.lengths, b.addrs) == 0
    assert udpio.recv_batch(rx.fileno(), b.buf, STRIDE, b.lengths) == 0


def test_blocking_socket_never_blocks(pair: tuple[socket.socket, socket.socket]) -> None:
    _, rx = pair
    rx.setblocking(True)  # MSG_DONTWAIT on every call: a batch loop can never hang on an idle socket
    b = Batch(4)
    assert udpio.recv_batch(rx.fileno(), b.buf, STRIDE, b.lengths) == 0


def test_partial_reads_take_what_fits(pair: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = pair
    data = _payloads(10, seed=2, high=200)
    for d in data:
        tx.sendto(d, rx.getsockname())
    small = Batch(4)
    counts, got = [], []
    for _ in range(5):
        n = udpio.recv_batch(rx.fileno(), small.buf, STRIDE, small.lengths, small.addrs)
        counts.append(n)
        got += [small.get(i) for i in range(n)]
    assert counts == [4, 4, 2, 0, 0]
    assert got == data


def test_max_count_and_shortest_array_bound_the_batch(pair: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = pair
    for d in _payloads(6, seed=3, high=50):
        tx.sendto(d, rx.getsockname())
    b = Batch(8)
    assert udpio.recv_batch(rx.fileno(), b.buf, STRIDE, b.lengths, b.addrs, 1) == 1
    short_lengths = array("I", [0, 0])  # two lengths: at most two slots, whatever the buffer holds
    assert udpio.recv_batch(rx.fileno(), b.buf, STRIDE, short_lengths, b.addrs) == 2
    short_addrs = udpio.new_addrs(1)
    assert udpio.recv_batch(rx.fileno(), b.buf, STRIDE, b.lengths, short_addrs) == 1
    assert udpio.recv_batch(rx.fileno(), b.buf, STRIDE, b.lengths, b.addrs, 0) == 0
    assert udpio.recv_batch(rx.fileno(), b.buf, STRIDE, b.lengths, b.addrs) == 2


def test_big_batch_crosses_several_syscalls(pair: tuple[socket.socket, socket.socket]) -> None:
    # 1000 > the 256 messages per syscall in csrc/udpio.c: the chunking must neither lose nor reorder.
    tx, rx = pair
    n = 1000
    data = _payloads(n, seed=4, low=8, high=120)
    out = Batch(n, stride=128)
    for i, d in enumerate(data):
        out.put(i, d)
    dest = udpio.addr_pack(*rx.getsockname()[:2])
    sent = 0
    for _ in range(100):
        sent += udpio.send_batch(tx.fileno(), out.buf, 128, out.lengths, None, dest, n - sent, sent)
        if sent == n:
            break
    assert sent == n
    inb = Batch(n, stride=128)
    assert udpio.recv_batch(rx.fileno(), inb.buf, 128, inb.lengths, inb.addrs) == n
    assert [inb.get(i) for i in range(n)] == data


def test_truncated_datagram_is_flagged_by_its_real_length(pair: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = pair
    big, small = bytes(range(256)) * 12, b"after"  # 3072 B into 1024-byte slots
    tx.sendto(big, rx.getsockname())
    tx.sendto(small, rx.getsockname())
    b = Batch(2, stride=1024)
    assert udpio.recv_batch(rx.fileno(), b.buf, 1024, b.lengths, b.addrs) == 2
    assert b.lengths[0] == 3072 > 1024  # the convention: length > stride means truncated
    assert bytes(b.buf[:1024]) == big[:1024]
    assert b.lengths[1] == 5 and b.get(1) == small  # the next slot is untouched by the overflow


def test_per_slot_destinations_and_offsets() -> None:
    tx = _udp(socket.AF_INET, "127.0.0.1")
    rx1, rx2 = _udp(socket.AF_INET, "127.0.0.1"), _udp(socket.AF_INET6, "::1")
    tx6 = _udp(socket.AF_INET6, "::")  # dual-stack sender reaches both families
    with tx, rx1, rx2, tx6:
        n = 12
        out = Batch(n)
        offsets = array("I", [(i * 37) % 200 for i in range(n)])
        for i in range(n):
            out.put(i, f"packet {i}".encode(), offsets[i])
        for i in range(n):
            target = rx1 if i % 3 else rx2
            udpio.addr_set(out.addrs, i, *target.getsockname()[:2])
        assert udpio.send_batch(tx6.fileno(), out.buf, STRIDE, out.lengths, offsets, out.addrs, n) == n
        got1 = [d for d, _ in _recv_all(rx1, 8, Batch(16))]
        got2 = [d for d, _ in _recv_all(rx2, 4, Batch(16))]
        assert got1 == [f"packet {i}".encode() for i in range(n) if i % 3]
        assert got2 == [f"packet {i}".encode() for i in range(n) if not i % 3]


def test_indexed_send_follows_the_order(pair: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = pair
    n = 16
    out = Batch(n)
    for i in range(n):
        out.put(i, struct.pack("!H", i))
        udpio.addr_set(out.addrs, i, *rx.getsockname()[:2])
    order = array("I", random.Random(5).sample(range(n), n))
    # Two groups, as a router sends a batch sorted by egress: order[0:5], then order[5:16].
    fd = tx.fileno()
    assert udpio.send_batch_indexed(fd, out.buf, STRIDE, out.lengths, None, out.addrs, order, 5) == 5
    assert udpio.send_batch_indexed(fd, out.buf, STRIDE, out.lengths, None, out.addrs, order, 11, 5) == 11
    got = [struct.unpack("!H", d)[0] for d, _ in _recv_all(rx, n, Batch(n))]
    assert got == list(order)


def test_connected_socket_needs_no_destination(pair: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = pair
    tx.connect(rx.getsockname())
    out = Batch(3)
    for i in range(3):
        out.put(i, b"c%d" % i)
    assert udpio.send_batch(tx.fileno(), out.buf, STRIDE, out.lengths, None, None, 3) == 3
    assert [d for d, _ in _recv_all(rx, 3, Batch(4))] == [b"c0", b"c1", b"c2"]


def test_ipv4_peer_on_dual_stack_socket_is_recorded_as_ipv4() -> None:
    rx = _udp(socket.AF_INET6, "::")
    tx = _udp(socket.AF_INET, "127.0.0.1")
    with rx, tx:
        tx.sendto(b"v4", ("127.0.0.1", rx.getsockname()[1]))
        b = Batch(2)
        got = _recv_all(rx, 1, b)
        assert got == [(b"v4", tx.getsockname())]
        assert struct.unpack_from("=H", b.addrs, 0)[0] == socket.AF_INET
        # Replying to that record from the IPv6 socket reaches the IPv4 peer.
        b.put(0, b"reply")
        assert udpio.send_batch(rx.fileno(), b.buf, STRIDE, b.lengths, None, bytes(b.addrs[:24]), 1) == 1
        assert tx.recv(10) == b"reply"


def test_send_stops_before_a_bad_packet_and_then_reports_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    tx, rx = pair
    out = Batch(4)
    for i in range(4):
        out.put(i, b"ok%d" % i)
        udpio.addr_set(out.addrs, i, *rx.getsockname()[:2])
    out.lengths[2] = STRIDE + 1  # does not fit its slot
    out.addrs[3 * 24 : 4 * 24] = bytes(24)  # empty destination record
    fd = tx.fileno()
    assert udpio.send_batch(fd, out.buf, STRIDE, out.lengths, None, out.addrs, 4) == 2
    with pytest.raises(OSError) as bad_len:
        udpio.send_batch(fd, out.buf, STRIDE, out.lengths, None, out.addrs, 2, 2)
    assert bad_len.value.errno == errno.EINVAL
    with pytest.raises(OSError) as bad_dest:
        udpio.send_batch(fd, out.buf, STRIDE, out.lengths, None, out.addrs, 1, 3)
    assert bad_dest.value.errno == errno.EAFNOSUPPORT
    offsets = array("I", [0, 0, 0, STRIDE])  # an offset at the slot's end leaves no room
    out.lengths[2] = 3
    udpio.addr_set(out.addrs, 3, *rx.getsockname()[:2])
    assert udpio.send_batch(fd, out.buf, STRIDE, out.lengths, offsets, out.addrs, 4) == 3
    assert [d for d, _ in _recv_all(rx, 5, Batch(8))] == [b"ok0", b"ok1", b"ok0", b"ok1", b"ok2"]
    # An out-of-range slot index in the order is refused the same way.
    order = array("I", [1, 99])
    assert udpio.send_batch_indexed(fd, out.buf, STRIDE, out.lengths, None, out.addrs, order, 2) == 1
    with pytest.raises(OSError, match="Invalid argument"):
        udpio.send_batch_indexed(fd, out.buf, STRIDE, out.lengths, None, out.addrs, order, 1, 1)


def test_full_socket_gives_partial_send_then_zero() -> None:
    # UDP on loopback drops rather than blocks, so a full unix datagram pair stands in for a full
    # socket buffer: sendmmsg stops part-way and the next call would block.
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.setblocking(False)
        # Queued datagrams are charged to the sender's buffer until read: 32 KiB holds about 16 of them.
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        out = Batch(64, stride=1024)
        for i in range(64):
            out.put(i, bytes([i]) * 1000)
        sent_calls = []
        for _ in range(200):
            k = udpio.send_batch(a.fileno(), out.buf, 1024, out.lengths, None, None, 64)
            sent_calls.append(k)
            if k == 0:
                break
        assert 0 < sent_calls[0] < 64
        assert sent_calls[-1] == 0
        total = sum(sent_calls)
        inb = Batch(64, stride=1024)
        received = 0
        for _ in range(200):
            n = udpio.recv_batch(b.fileno(), inb.buf, 1024, inb.lengths, None)
            if n == 0:
                break
            assert all(inb.lengths[i] == 1000 for i in range(n))
            received += n
        assert received == total


def test_errors_raise_oserror_with_errno() -> None:
    b = Batch(2)
    with pytest.raises(OSError) as e:
        udpio.recv_batch(-1, b.buf, STRIDE, b.lengths, b.addrs)
    assert e.value.errno == errno.EBADF
    with pytest.raises(OSError) as e:
        udpio.send_batch(-1, b.buf, STRIDE, b.lengths, None, udpio.addr_pack("127.0.0.1", 9), 1)
    assert e.value.errno == errno.EBADF
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as e:
            udpio.recv_batch(r, b.buf, STRIDE, b.lengths, b.addrs)
        assert e.value.errno == errno.ENOTSOCK
    finally:
        os.close(r)
        os.close(w)


def test_argument_errors_are_caught_before_the_syscall() -> None:
    b = Batch(2)
    with pytest.raises(ValueError, match="stride"):
        udpio.recv_batch(0, b.buf, 0, b.lengths)
    with pytest.raises(ValueError, match="usable slots"):
        udpio.send_batch(0, b.buf, STRIDE, b.lengths, None, None, 3)
    with pytest.raises(ValueError, match="records"):
        udpio.send_batch(0, b.buf, STRIDE, b.lengths, None, bytes(30), 1)
    with pytest.raises(TypeError):
        udpio.send_batch_indexed(0, b.buf, STRIDE, b.lengths, None, None, None, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):  # lengths must be uint32 ('I'), not bytes
        udpio.recv_batch(0, b.buf, STRIDE, bytearray(8))
    assert udpio.send_batch(0, b.buf, STRIDE, b.lengths, None, None, 0) == 0


def test_record_layout_matches_the_c_struct() -> None:
    # csrc/udpio.h: u16 family, u16 port (host order), u32 scope id, 16 address bytes.
    rec = udpio.addr_pack("192.0.2.1", 0x1234)
    assert udpio.ADDR_SIZE == len(rec) == 24
    assert rec == struct.pack("=HHI16s", socket.AF_INET, 0x1234, 0, bytes([192, 0, 2, 1]))
    rec6 = udpio.addr_pack("2001:db8::1", 443)
    raw6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    assert rec6 == struct.pack("=HHI16s", socket.AF_INET6, 443, 0, raw6)
    assert udpio.addr_pack("::ffff:192.0.2.1", 0x1234) == rec
    assert udpio.addr_get(udpio.addr_pack("fe80::1%1", 5), 0) == ("fe80::1%1", 5)


@pytest.mark.parametrize("host", ["example.org", "1.2.3", "::g", ""])
def test_addr_pack_takes_numeric_hosts_only(host: str) -> None:
    with pytest.raises(ValueError, match="numeric"):
        udpio.addr_pack(host, 1)


def test_addr_helpers_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="port"):
        udpio.addr_pack("127.0.0.1", 65536)
    addrs = udpio.new_addrs(2)
    with pytest.raises(ValueError, match="empty"):
        udpio.addr_get(addrs, 0)
    with pytest.raises(IndexError):
        udpio.addr_get(addrs, 2)
    with pytest.raises(IndexError):
        udpio.addr_set(addrs, -1, "127.0.0.1", 1)


@given(st.ip_addresses(), st.integers(0, 65535))
def test_addr_records_round_trip(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
    # ::ffff:a.b.c.d is stored as IPv4 by design (test_record_layout_matches_the_c_struct).
    assume(not (isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped))
    addrs = udpio.new_addrs(3)
    udpio.addr_set(addrs, 1, str(address), port)
    assert udpio.addr_get(addrs, 1) == (str(address), port)
    assert udpio.addr_bytes(addrs, 1) == udpio.addr_pack(str(address), port)
    assert addrs[:24] == bytes(24) and addrs[48:] == bytes(24)  # neighbours untouched


# -- UDP GSO (UDP_SEGMENT) and GRO (UDP_GRO) ------------------------------------------------------------


def _slots(payloads: list[bytes], offset: int = 40) -> tuple[bytearray, array[int], array[int]]:
    buf = bytearray(len(payloads) * STRIDE)
    lengths, offsets = array("I", [0]) * len(payloads), array("I", [0]) * len(payloads)
    for i, p in enumerate(payloads):
        offsets[i] = offset
        buf[i * STRIDE + offset: i * STRIDE + offset + len(p)] = p
        lengths[i] = len(p)
    return buf, lengths, offsets


def _drain(rx: socket.socket, reader: udpio.GroReader | None, batch: int, want: int) -> list[tuple[bytes, int]]:
    buf, lengths, addrs = bytearray(batch * STRIDE), array("I", [0]) * batch, udpio.new_addrs(batch)
    got: list[tuple[bytes, int]] = []
    for _ in range(1000):
        if len(got) >= want:
            break
        if reader is not None:
            n = reader.recv_batch(rx.fileno(), buf, STRIDE, lengths, addrs)
        else:
            n = udpio.recv_batch(rx.fileno(), buf, STRIDE, lengths, addrs)
        got += [(bytes(buf[i * STRIDE: i * STRIDE + lengths[i]]), udpio.addr_get(addrs, i)[1]) for i in range(n)]
    return got


@pytest.mark.parametrize("gro", [False, True], ids=["plain-rx", "gro-rx"])
def test_gso_send_arrives_as_the_datagrams_it_was_made_of(pair: tuple[socket.socket, socket.socket],
                                                          gro: bool) -> None:
    tx, rx = pair
    reader = udpio.GroReader() if gro and udpio.enable_gro(rx) else None
    if gro and reader is None:
        pytest.skip("kernel without UDP_GRO")
    # Two runs: 9 of 1200 B closed by a 77-byte one, then 3 of 500 B; then a lone 1300-byte datagram.
    payloads = [os.urandom(1200) for _ in range(9)] + [os.urandom(77)] + [os.urandom(500) for _ in range(3)]
    payloads.append(os.urandom(1300))
    buf, lengths, offsets = _slots(payloads)
    dest = udpio.addr_pack(*rx.getsockname()[:2])
    sent, refused = udpio.send_batch_gso(tx.fileno(), buf, STRIDE, lengths, offsets, dest, len(payloads))
    assert (sent, refused) == (len(payloads), False)
    # A batch of 4 slots: a coalesced message longer than that waits in the reader for the next call.
    got = _drain(rx, reader, 4, len(payloads))
    assert [p for p, _ in got] == payloads
    assert {port for _, port in got} == {tx.getsockname()[1]}
    if reader is not None:
        assert not reader.pending


def test_gso_send_starts_where_asked_and_is_bounded_per_message(pair: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = pair
    # 100 datagrams of 1000 B: more than one message may carry (64 segments, 64000 bytes).
    payloads = [struct.pack("!I", i) + os.urandom(996) for i in range(100)]
    buf, lengths, offsets = _slots(payloads, offset=0)
    dest = udpio.addr_pack(*rx.getsockname()[:2])
    sent, _ = udpio.send_batch_gso(tx.fileno(), buf, STRIDE, lengths, offsets, dest, 90, start=10)
    assert sent == 90
    got = _drain(rx, None, 64, 90)
    assert [p for p, _ in got] == payloads[10:]
    with pytest.raises(ValueError):
        udpio.send_batch_gso(tx.fileno(), buf, STRIDE, lengths, offsets, dest, 101)
