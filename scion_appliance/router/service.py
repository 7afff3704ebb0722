"""The border-router process: sockets, waiting and timers around the sans-IO ``Dataplane`` (trio).

Rules kept here:
- One non-blocking UDP socket per external interface (its underlay ``local`` address) and one internal
  socket (``internal_addr``). Each has a task that waits with ``trio.lowlevel.wait_readable``, then drains
  the socket in batches (``udpio.recv_batch``), hands each batch to the dataplane and sends what comes
  back (``udpio.send_batch_indexed``: sendmmsg straight from the receive buffer) before receiving again.
- A send that would block drops the rest of that group (counted: a router does not queue); an error on
  one packet drops that packet (counted) and the rest still go out.
- A timer task releases delayed and held-back packets of impaired links when they are due.
- The control socket (a Unix datagram socket) takes the commands of ``router.control``.
- Ready means every socket is bound: the ready file (JSON: pid, ISD-AS, addresses) is written then and
  removed on exit. SIGTERM or SIGINT, or the "stop" command, stop the router cleanly.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import trio

from scion_appliance._fast import udpio
from scion_appliance.errors import OperatorError
from scion_appliance.log import get_logger
from scion_appliance.router import control
from scion_appliance.router.dataplane import Datagram, Dataplane, Out, SlotSend, link_name
from scion_appliance.router.topology import Address, Topology, format_addr

log = get_logger("router")
SOCKET_BUFFER = 4 * 1024 * 1024
DRAIN_BATCHES = 16  # batches taken from one socket before letting the other tasks run


def _open_udp(addr: Address, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        s.bind(addr)
    except OSError as e:
        s.close()
        raise OperatorError(
            f"cannot bind {what} to {format_addr(addr)}: {e.strerror}; "
            "check that the address is local and no other process uses the port"
        ) from None
    s.setblocking(False)
    return s


class RouterService:
    def __init__(
        self,
        dp: Dataplane,
        *,
        control_path: str | None = None,
        ready_file: str | None = None,
    ) -> None:
        self.dp = dp
        self.control_path = control_path
        self.ready_file = ready_file
        self.socks: dict[int, socket.socket] = {}
        self._wake = trio.Event()
        self._cancel: trio.CancelScope | None = None

    def _bind_all(self) -> None:
        for link, addr in self.dp.sockets.items():
            what = "the internal socket" if link == 0 else f"interface {link}"
            self.socks[link] = _open_udp(addr, f"{what} of {self.dp.router.name}")

    def _send(self, out: list[Out]) -> None:
        dp = self.dp
        for item in out:
            sock = self.socks[item.link]
            if isinstance(item, SlotSend):
                self._send_slots(sock.fileno(), item)
                continue
            try:
                sock.sendto(item.data, item.dest)
            except BlockingIOError:
                dp.count("drop.tx_would_block")
            except OSError as e:
                dp.count("drop.tx_error")
                log.debug(
                    "router.send_error", link=link_name(item.link), dest=list(item.dest), error=e.strerror
                )

    def _send_slots(self, fd: int, item: SlotSend) -> None:
        b, start, count = item.batch, item.start, item.count
        while count > 0:
            try:
                k = udpio.send_batch_indexed(
                    fd, b.buf, b.stride, b.lens, None, item.dests, item.order, count, start
                )
            except OSError as e:
                self.dp.count("drop.tx_error")
                log.debug("router.send_error", link=link_name(item.link), error=e.strerror)
                start, count = start + 1, count - 1
                continue
            if k == 0:
                self.dp.count("drop.tx_would_block", count)
                return
            start, count = start + k, count - k

    async def _rx_loop(self, link: int, sock: socket.socket) -> None:
        dp = self.dp
        b = dp.rx(link)
        fd = sock.fileno()
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(DRAIN_BATCHES):
                try:
                    n = udpio.recv_batch(fd, b.buf, b.stride, b.lens, b.addrs)
                except OSError as e:
                    dp.count("rx_error")
                    log.debug("router.recv_error", link=link_name(link), error=e.strerror)
                    continue
                if n == 0:
                    break
                self._send(dp.process(link, n, time.time()))
            if dp.next_deadline() is not None:
                self._wake.set()
            await trio.lowlevel.checkpoint()

    async def _timer_loop(self) -> None:
        dp = self.dp
        while True:
            deadline = dp.next_deadline()
            now = time.time()
            if deadline is None or deadline > now:
                with trio.move_on_after(math.inf if deadline is None else deadline - now):
                    await self._wake.wait()
                if self._wake.is_set():
                    self._wake = trio.Event()
                continue
            self._send(dp.due(now))

    async def _control_loop(
        self, path: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with sock:
            await sock.bind(path)
            task_status.started()
            while True:
                data, peer = await sock.recvfrom(65536)
                try:
                    doc: Any = json.loads(data)
                except ValueError:
                    doc = None
                answer = control.handle(self.dp, doc)
                if peer:
                    try:
                        await sock.sendto(json.dumps(answer).encode(), peer)
                    except OSError as e:
                        log.debug("router.control_reply_failed", error=e.strerror)
                if isinstance(doc, dict) and doc.get("cmd") in ("link", "impair"):
                    log.info("router.control", **{k: v for k, v in doc.items() if isinstance(k, str)})
                if answer.get("ok") and isinstance(doc, dict) and doc.get("cmd") == "stop":
                    self.stop()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
            async for signum in sigs:
                log.info("router.stopping", signal=signal.Signals(signum).name)
                self.stop()
                return

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    def _write_ready(self) -> None:
        if not self.ready_file:
            return
        doc = {
            "pid": os.getpid(),
            "isd_as": str(self.dp.ia),
            "router": self.dp.router.name,
            "internal_addr": list(self.dp.router.internal_addr),
            "control": self.control_path,
        }
        tmp = Path(f"{self.ready_file}.tmp")
        tmp.write_text(json.dumps(doc) + "\n")
        tmp.replace(self.ready_file)

    async def serve(self) -> None:
        self._bind_all()
        if self.control_path:
            p = Path(self.control_path)
            if p.exists() or p.is_symlink():
                p.unlink()
        try:
            with trio.CancelScope() as scope:
                self._cancel = scope
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._signals)
                    if self.control_path:
                        await nursery.start(self._control_loop, self.control_path)
                    for link, sock in self.socks.items():
                        nursery.start_soon(self._rx_loop, link, sock)
                    nursery.start_soon(self._timer_loop)
                    self._write_ready()
                    log.info(
                        "router.ready",
                        isd_as=str(self.dp.ia),
                        router=self.dp.router.name,
                        sockets={link_name(k): format_addr(v) for k, v in self.dp.sockets.items()},
                    )
        finally:
            for s in self.socks.values():
                s.close()
            for path in (self.ready_file, self.control_path):
                if path:
                    Path(path).unlink(missing_ok=True)
            log.info("router.stopped", isd_as=str(self.dp.ia), counters=self.dp.snapshot())


def build(topo: Topology, hop_key: bytes, *, name: str | None = None, **kwargs: Any) -> Dataplane:
    return Dataplane(topo, topo.router(name), hop_key, **kwargs)


def run(
    topology_path: str,
    keys_dir: str,
    *,
    name: str | None = None,
    control_path: str | None = None,
    ready_file: str | None = None,
    scmp_error_rate: float = 100.0,
) -> None:
    from scion_appliance.router import topology
    from scion_appliance.scion.keys import load_master_keys

    topo = topology.load(topology_path)
    keys = load_master_keys(keys_dir)
    dp = build(
        topo, keys.hop_key, name=name, scmp_error_rate=scmp_error_rate, scmp_error_burst=scmp_error_rate
    )
    service = RouterService(dp, control_path=control_path, ready_file=ready_file)
    trio.run(service.serve)


__all__ = ["Datagram", "RouterService", "build", "run"]
