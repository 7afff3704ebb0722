"""Network namespaces for the lab and the tests: create them, join them with veth pairs, run and enter.

Rules kept here:
- Namespaces are iproute2's named ones (bind mounts under /run/netns, `ip netns add/del`), so an
  operator can inspect them with the usual tools (`ip netns`, `ip -n NAME addr`).
- Every change goes through the `ip` command; a failure raises ``OperatorError`` naming the command,
  what it said and what to do. Nothing here touches the root namespace's addresses or routes.
- ``entered(name)`` moves only the calling thread (setns), and always moves it back: sockets and TUN
  devices created inside stay in that namespace, and so do processes the thread starts.
- Interface names are at most 15 bytes (the kernel's IFNAMSIZ); they are checked before any command.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scion_appliance.errors import OperatorError

NETNS_DIR = Path("/run/netns")
IFNAMSIZ = 16
CLONE_NEWNET = 0x40000000
# Bounds every `ip` call: they return in milliseconds; a hang means a broken system, not a slow one.
IP_TIMEOUT = 10.0


def _ip_binary() -> str:
    path = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.path.exists(p)), None)
    if path is None:
        raise OperatorError("the `ip` command (iproute2) is not installed: run `apt-get install iproute2`")
    return path


def check_ifname(name: str) -> str:
    """Returns ``name`` if the kernel accepts it as an interface name, else raises ``ValueError``."""
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or any(c in name for c in "/ \t\n:") or name in (".", ".."):
        raise ValueError(f"bad interface name {name!r}: 1 to {IFNAMSIZ - 1} bytes, no '/', ':' or spaces")
    return name


def ip(*args: str, netns: str | None = None) -> str:
    """Runs ``ip [-n NETNS] ARGS...`` and returns what it printed; a failure raises ``OperatorError``."""
    argv = [_ip_binary()]
    if netns is not None:
        argv += ["-n", netns]
    argv += list(args)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise OperatorError(f"`{' '.join(argv)}` did not finish in {IP_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().replace("\n", "; ")
        hint = (
            "run as root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
            if os.geteuid() != 0 or "ermission" in said
            else "check the names and addresses given"
        )
        raise OperatorError(f"`{' '.join(argv)}` failed: {said or f'exit {done.returncode}'}; {hint}")
    return done.stdout


# -- namespaces ----------------------------------------------------------------------------------------


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def list_names() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


def add(name: str, *, loopback_up: bool = True) -> None:
    """Creates namespace ``name`` (its loopback brought up unless told otherwise)."""
    ip("netns", "add", name)
    if loopback_up:
        ip("link", "set", "dev", "lo", "up", netns=name)


def delete(name: str) -> None:
    """Deletes namespace ``name`` and with it every interface inside; a missing one is not an error."""
    if exists(name):
        ip("netns", "del", name)


def unique_name(prefix: str = "sa") -> str:
    """A namespace name no other run is using (prefix, process id and a random part)."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@contextmanager
def scratch(prefix: str = "sa") -> Iterator[str]:
    """A fresh namespace for the duration of the ``with`` block, deleted afterwards whatever happens."""
    name = unique_name(prefix)
    add(name)
    try:
        yield name
    finally:
        delete(name)


# -- links and addresses --------------------------------------------------------------------------------


def add_veth(dev_a: str, dev_b: str, *, netns_a: str | None = None, netns_b: str | None = None,
             mtu: int | None = None, up: bool = True) -> None:
    """Creates the veth pair ``dev_a``/``dev_b``, places each end in its namespace (None: this one)
    and brings both up. Deleting either end (or its namespace) deletes the pair."""
    check_ifname(dev_a)
    check_ifname(dev_b)
    args = ["link", "add", dev_a]
    if netns_a is not None:
        args += ["netns", netns_a]
    if mtu is not None:
        args += ["mtu", str(mtu)]
    args += ["type", "veth", "peer", "name", dev_b]
    if netns_b is not None:
        args += ["netns", netns_b]
    if mtu is not None:
        args += ["mtu", str(mtu)]
    ip(*args)
    if up:
        set_up(dev_a, netns=netns_a)
        set_up(dev_b, netns=netns_b)


def move_link(dev: str, netns: str, *, from_netns: str | None = None) -> None:
    """Moves interface ``dev`` into namespace ``netns`` (it arrives down and without addresses)."""
    ip("link", "set", "dev", check_ifname(dev), "netns", netns, netns=from_netns)


def set_up(dev: str, *, netns: str | None = None) -> None:
    ip("link", "set", "dev", check_ifname(dev), "up", netns=netns)


def set_down(dev: str, *, netns: str | None = None) -> None:
    ip("link", "set", "dev", check_ifname(dev), "down", netns=netns)


def set_mtu(dev: str, mtu: int, *, netns: str | None = None) -> None:
    ip("link", "set", "dev", check_ifname(dev), "mtu", str(mtu), netns=netns)


def add_address(dev: str, cidr: str, *, netns: str | None = None) -> None:
    """Adds ``cidr`` (e.g. ``198.51.100.1/30`` or ``2001:db8::1/64``) to ``dev``. IPv6 addresses skip
    duplicate address detection so they are usable at once."""
    extra = ["nodad"] if ":" in cidr else []
    ip("addr", "add", cidr, "dev", check_ifname(dev), *extra, netns=netns)


def add_route(prefix: str, *, dev: str | None = None, via: str | None = None,
              netns: str | None = None) -> None:
    args = ["route", "add", prefix]
    if via is not None:
        args += ["via", via]
    if dev is not None:
        args += ["dev", check_ifname(dev)]
    ip(*args, netns=netns)


def link_exists(dev: str, *, netns: str | None = None) -> bool:
    try:
        ip("link", "show", "dev", check_ifname(dev), netns=netns)
    except OperatorError:
        return False
    return True


@dataclass(frozen=True)
class LinkedPair:
    """Two namespaces joined by one veth link, with an address on each end."""

    a: str  # namespace names
    b: str
    dev_a: str  # the veth end inside a / inside b
    dev_b: str
    addr_a: str  # host addresses (no prefix length)
    addr_b: str


@contextmanager
def linked_pair(
    cidr_a: str = "198.51.100.1/30", cidr_b: str = "198.51.100.2/30", *, prefix: str = "sa"
) -> Iterator[LinkedPair]:
    """Two fresh namespaces and a veth between them (``veth0`` in each, addressed ``cidr_a`` and
    ``cidr_b``, up), deleted afterwards whatever happens. Defaults are TEST-NET-2 addresses."""
    with ExitStack() as stack:
        a = stack.enter_context(scratch(prefix))
        b = stack.enter_context(scratch(prefix))
        add_veth("veth0", "veth0", netns_a=a, netns_b=b)
        add_address("veth0", cidr_a, netns=a)
        add_address("veth0", cidr_b, netns=b)
        yield LinkedPair(a, b, "veth0", "veth0", cidr_a.split("/")[0], cidr_b.split("/")[0])


# -- running inside -------------------------------------------------------------------------------------


def _exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    if not argv:
        raise ValueError("empty command")
    return [_ip_binary(), "netns", "exec", name, *argv]


def run(name: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0,
        **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Runs ``argv`` inside namespace ``name`` (``ip netns exec``), output captured as text.

    ``check`` raises ``OperatorError`` on a non-zero exit, naming the command and its stderr."""
    full = _exec_argv(name, argv)
    kwargs.setdefault("capture_output", True)
    done = subprocess.run(full, text=True, timeout=timeout, check=False, **kwargs)
    if check and done.returncode != 0:
        said = (done.stderr or "").strip().replace("\n", "; ")
        raise OperatorError(f"`{' '.join(full)}` exited {done.returncode}: {said or 'no message'}")
    return done


def popen(name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Starts ``argv`` inside namespace ``name``; the caller waits for it (or terminates it)."""
    return subprocess.Popen(_exec_argv(name, argv), **kwargs)


@functools.cache
def _libc_setns() -> Any:
    setns = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        return setns
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = libc.setns
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int

    def setns_ctypes(fd: int, nstype: int) -> None:
        if fn(fd, nstype) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return setns_ctypes


def _setns(fd: int) -> None:
    _libc_setns()(fd, CLONE_NEWNET)


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Runs the ``with`` block's calling thread inside namespace ``name``, then moves it back.

    Sockets and TUN devices opened inside belong to ``name`` for their whole life. Other threads of
    the process are not affected. Needs CAP_SYS_ADMIN (root)."""
    path = NETNS_DIR / name
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OperatorError(f"network namespace {name!r} does not exist ({path} missing)") from None
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _setns(target)
            except PermissionError:
                raise OperatorError(
                    f"entering network namespace {name!r} needs CAP_SYS_ADMIN: run as root"
                ) from None
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)
    finally:
        os.close(target)


# -- can this machine do it? ----------------------------------------------------------------------------


@functools.cache
def unavailable_reason() -> str | None:
    """None when namespaces and veth pairs work here; otherwise why not, in one line (for test skips
    and for the lab's fallback to loopback). Probes once by creating and deleting a namespace."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN): run as root"
    try:
        _ip_binary()
    except OperatorError as e:
        return str(e)
    name = unique_name("sa-probe")
    try:
        add(name)
        try:
            add_veth("saprobe0", "saprobe1", netns_a=name, netns_b=name)
        finally:
            delete(name)
    except OperatorError as e:
        return f"network namespaces or veth pairs do not work here: {e}"
    return None
