"""A gateway in its own process, for tests that kill it (tests/test_crash.py).

Usage: ``python tests/gateway_proc.py CONFIG_JSON`` where the JSON object holds ``state_dir``, ``key``
(this gateway's private key, hex: a test key, never a real one), ``peer_key`` (public, hex), ``ia``,
``host``, ``port``, ``peer_host``, ``peer_port``, ``next_hop`` ([host, port]: the recording relay), ``gen``
(a number that tags this incarnation's payloads) and ``send_interval`` (s; 0 sends nothing).

It opens the rocksdict state store in ``state_dir`` (the handshake replay marks live there), runs one
``Gateway`` with the peer, sends ``B<gen>:<seq>`` datagrams to the peer every ``send_interval`` and
flushes its drop counters into the store's lifetime counters every 50 ms (store writes in flight when the
test kills it). Every event is one line on stdout, written with a single ``os.write`` so a line written
before a SIGKILL is never lost or torn (pipe writes under PIPE_BUF are atomic):

    ready {"pid", "mark", "schema", "lifetime"}   store opened, socket bound
    session {SessionKeys fields, fingerprints hex} before any packet is sealed with that session
    recv <payload>                                 a datagram delivered by the gateway
    counters {...}                                 the gateway's counters, every 50 ms
    store-error <message>                          the store did not open (exit status 2)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import sys
from typing import Any

import trio

from scion_appliance.gateway.service import Gateway, GatewayError, PeerSpec, SessionKeys
from scion_appliance.paths.quality import QualityConfig
from scion_appliance.paths.selection import SelectionPolicy
from scion_appliance.paths.source import PathInfo, StaticPathSource
from scion_appliance.scion.addr import IA
from scion_appliance.state import StateError, StateStore
from scion_appliance.tunnel.keys import public_key


def emit(kind: str, body: Any) -> None:
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"), sort_keys=True)
    os.write(1, f"{kind} {text}\n".encode())


def on_session(s: SessionKeys) -> None:
    d = dataclasses.asdict(s)
    d["send_fingerprint"] = s.send_fingerprint.hex()
    d["receive_fingerprint"] = s.receive_fingerprint.hex()
    emit("session", d)


async def main(cfg: dict[str, Any]) -> int:
    try:
        store = StateStore.open(cfg["state_dir"])
    except StateError as e:
        emit("store-error", str(e))
        return 2
    peer_pub = bytes.fromhex(cfg["peer_key"])
    ia = IA.parse(cfg["ia"])
    gw = Gateway(
        ia=ia,
        host=ipaddress.ip_address(cfg["host"]),
        port=cfg["port"],
        private_key=bytes.fromhex(cfg["key"]),
        peers=[PeerSpec("peer", ia, ipaddress.ip_address(cfg["peer_host"]), cfg["peer_port"], peer_pub,
                        ipaddress.ip_address(cfg["peer_host"]))],
        path_source=StaticPathSource({str(ia): [PathInfo("relay", 0, (), b"", tuple(cfg["next_hop"]))]}),
        probe_interval=0.02,
        quality=QualityConfig(down_after_lost=2, probe_timeout_initial=0.1, probe_timeout_min=0.05),
        policy=SelectionPolicy(min_dwell=0.2),
        store=store,
    )  # fmt: skip
    gw.on_session = on_session
    mark = store.get_handshake_timestamp(peer_pub)
    flushed: dict[str, int] = {}

    async def receiver() -> None:
        while True:
            _, payload = await gw.receive()
            emit("recv", payload.decode())

    async def sender() -> None:
        seq = 0
        while True:
            try:
                await gw.send(ia, f"B{cfg['gen']}:{seq}".encode())
            except GatewayError:
                pass
            seq += 1
            await trio.sleep(cfg["send_interval"])

    async def reporter() -> None:
        while True:
            emit("counters", dict(gw.counters))
            deltas = {k: v - flushed.get(k, 0) for k, v in gw.counters.items() if v != flushed.get(k, 0)}
            await trio.to_thread.run_sync(store.add_counters, deltas)
            flushed.update({k: flushed.get(k, 0) + d for k, d in deltas.items()})
            await trio.sleep(0.05)

    try:
        async with gw, trio.open_nursery() as n:
            emit(
                "ready",
                {
                    "pid": os.getpid(),
                    "mark": mark.hex() if mark else None,
                    "schema": store.schema_version,
                    "lifetime": store.counters(),
                    "public_key": public_key(bytes.fromhex(cfg["key"])).hex(),
                },
            )
            n.start_soon(receiver)
            n.start_soon(reporter)
            if cfg["send_interval"] > 0:
                n.start_soon(sender)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, json.loads(sys.argv[1])))
