"""The TUN device: the gateway's door to the LAN's IP packets.

Rules kept here:
- A device is ``/dev/net/tun`` with IFF_TUN | IFF_NO_PI: every read or write is exactly one IP packet,
  no packet-information header. The fd is non-blocking and close-on-exec; waiting is the caller's job
  (``trio.lowlevel.wait_readable(dev.fileno())``).
- Packets move in batches through ``scion_appliance._fast.tunio`` (slot layout shared by the hot path);
  this module opens, configures (MTU, addresses, routes, up through iproute2) and closes.
- A device may be created inside a named network namespace (``netns=``): the fd then reads and writes
  that namespace's packets, and its configuration is applied there.
- What the operator can fix raises ``OperatorError``: missing /dev/net/tun, missing privileges, a name
  already taken.
- ``offload=True`` opens the device with the virtio-net header (IFF_VNET_HDR) and asks for checksum,
  TSO and (kernel 6.2+) USO offloads, as wireguard-go does: reads may then be GSO super-packets, which
  ``reader`` splits, and writes may coalesce one flow's packets into one (``tunio.write_vnet``). The
  offloads the kernel refused are left out (``offloads`` says which it took); without the header the
  device moves one packet per syscall as before.
- ``txqueuelen`` is the device's transmit queue toward the gateway (packets the LAN's hosts sent that
  the gateway has not read yet). The kernel's TUN default, 500, overflows under bursty senders (a paced
  iperf3, a TCP window opening) while the gateway is between reads; ``TXQUEUELEN`` is what ``open``
  sets unless told otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from scion_appliance import netns as _netns
from scion_appliance._fast import tunio
from scion_appliance.errors import OperatorError

if TYPE_CHECKING:
    from typing_extensions import Buffer

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6 = 0x01, 0x02, 0x04, 0x20, 0x40
# Tried in order: USO needs kernel 6.2+; checksum offload alone still saves the per-packet sum.
_OFFLOAD_SETS = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
    TUN_F_CSUM,
)
# struct ifreq: 16-byte name, then a union whose first member (short flags) is all TUNSETIFF reads.
_IFREQ = struct.Struct("16sH22x")

TXQUEUELEN = 1000  # packets; the kernel's TUN default is 500 (Ethernet devices get 1000)

NEEDS_PRIVILEGE = "run as root or give the process CAP_NET_ADMIN (systemd: AmbientCapabilities=CAP_NET_ADMIN)"


def unavailable_reason() -> str | None:
    """None when a TUN device can be created here, otherwise why not (one line)."""
    if not os.path.exists(TUN_PATH):
        return f"{TUN_PATH} is missing: load the tun module (`modprobe tun`) or pass the device in"
    if os.geteuid() != 0:
        return f"creating TUN devices needs CAP_NET_ADMIN: {NEEDS_PRIVILEGE}"
    return None


def _open_fd(name: str, flags: int = IFF_TUN | IFF_NO_PI) -> tuple[int, str]:
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OperatorError(
            f"{TUN_PATH} is missing: load the tun kernel module (`modprobe tun`), or in a container "
            f"pass the device in (e.g. `--device /dev/net/tun`)"
        ) from None
    except PermissionError:
        raise OperatorError(f"opening {TUN_PATH} was refused: {NEEDS_PRIVILEGE}") from None
    try:
        ifr = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
    except OSError as e:
        os.close(fd)
        if e.errno == errno.EPERM:
            raise OperatorError(f"creating TUN device {name!r} was refused: {NEEDS_PRIVILEGE}") from None
        if e.errno == errno.EBUSY:
            raise OperatorError(
                f"TUN device name {name!r} is taken by another device or process: choose another name"
            ) from None
        raise OperatorError(f"creating TUN device {name!r} failed: {e.strerror} (errno {e.errno})") from None
    actual = _IFREQ.unpack(ifr)[0].rstrip(b"\0").decode()
    return fd, actual


def _set_offloads(fd: int) -> int:
    """The richest offload set the kernel takes (0: none; the header still works, unsegmented)."""
    for flags in _OFFLOAD_SETS:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
        except OSError:
            continue
        return flags
    return 0


class TunDevice:
    """An open TUN device. ``TunDevice.open(...)`` creates and configures one; ``close()`` removes it
    (a non-persistent TUN device disappears with its last fd)."""

    def __init__(self, fd: int, name: str, netns: str | None = None, *, vnet_hdr: bool = False,
                 offloads: int = 0) -> None:
        self._fd = fd
        self.name = name
        self.netns = netns
        self.vnet_hdr = vnet_hdr  # every read and write carries a virtio-net header
        self.offloads = offloads  # TUN_F_* the kernel accepted
        self.reader = tunio.TunReader() if vnet_hdr else None

    @classmethod
    def open(
        cls,
        name: str = "sa%d",
        *,
        netns: str | None = None,
        mtu: int | None = None,
        addresses: Sequence[str] = (),
        routes: Sequence[str] = (),
        up: bool = True,
        offload: bool = False,
        txqueuelen: int | None = TXQUEUELEN,
    ) -> TunDevice:
        """Creates TUN device ``name`` (``%d`` lets the kernel number it), optionally inside network
        namespace ``netns``, then sets its MTU, adds ``addresses`` (CIDR), brings it up and adds
        ``routes`` (prefixes routed into the device). ``offload`` and ``txqueuelen`` (None: the kernel's
        default): see the module's rules."""
        _netns.check_ifname(name.replace("%d", "0"))
        with _netns.entered(netns) if netns is not None else contextlib.nullcontext():
            fd, actual = _open_fd(name, IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0))
        offloads = _set_offloads(fd) if offload else 0
        dev = cls(fd, actual, netns, vnet_hdr=offload, offloads=offloads)
        try:
            if mtu is not None:
                dev.set_mtu(mtu)
            if txqueuelen is not None:
                dev.set_txqueuelen(txqueuelen)
            for cidr in addresses:
                dev.add_address(cidr)
            if up:
                dev.set_up()
            for prefix in routes:
                dev.add_route(prefix)
        except BaseException:
            dev.close()
            raise
        return dev

    # -- configuration (iproute2, in the device's namespace) ---------------------------------------------

    def set_mtu(self, mtu: int) -> None:
        if not 68 <= mtu <= 65535:
            raise ValueError(f"MTU {mtu} outside 68..65535")
        _netns.set_mtu(self.name, mtu, netns=self.netns)

    def set_txqueuelen(self, length: int) -> None:
        if not 1 <= length <= 1_000_000:
            raise ValueError(f"txqueuelen {length} outside 1..1000000")
        _netns.ip("link", "set", "dev", self.name, "txqueuelen", str(length), netns=self.netns)

    @property
    def txqueuelen(self) -> int:
        out = _netns.ip("-o", "link", "show", "dev", self.name, netns=self.netns).split()
        return int(out[out.index("qlen") + 1].rstrip("\\")) if "qlen" in out else 0

    def add_address(self, cidr: str) -> None:
        _netns.add_address(self.name, cidr, netns=self.netns)

    def add_route(self, prefix: str) -> None:
        _netns.add_route(prefix, dev=self.name, netns=self.netns)

    def set_up(self) -> None:
        _netns.set_up(self.name, netns=self.netns)

    def set_down(self) -> None:
        _netns.set_down(self.name, netns=self.netns)

    @property
    def mtu(self) -> int:
        out = _netns.ip("-o", "link", "show", "dev", self.name, netns=self.netns).split()
        return int(out[out.index("mtu") + 1])

    # -- packets ---------------------------------------------------------------------------------------

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError(f"TUN device {self.name} is closed")
        return self._fd

    def read_batch(self, buf: Buffer, stride: int, lengths: Buffer, max_count: int = -1) -> int:
        """Reads waiting packets into the slot batch; see ``tunio.read_batch`` (super-packets of an
        offload device come split)."""
        if self.reader is not None:
            return self.reader.read_batch(self.fileno(), buf, stride, lengths, max_count)
        return tunio.read_batch(self.fileno(), buf, stride, lengths, max_count)

    def write_batch(self, buf: Buffer, stride: int, lengths: Buffer, offsets: Buffer | None, count: int,
                    start: int = 0) -> int:
        """Writes slots ``start..start+count-1``; see ``tunio.write_batch``."""
        return tunio.write_batch(self.fileno(), buf, stride, lengths, offsets, count, start, self.vnet_hdr)

    def write(self, packet: bytes) -> None:
        """Writes one IP packet (control-plane use; the data path uses ``write_batch``)."""
        if self.vnet_hdr:
            os.writev(self.fileno(), [bytes(tunio.VNET_HDR_LEN), packet])
        else:
            os.write(self.fileno(), packet)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        return f"<TunDevice {self.name}{where} fd={self._fd}>"

