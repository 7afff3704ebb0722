"""One appliance for bench/bench_e2e.sh: a Gateway and its IpTunnel, the underlay socket in the network
namespace this process runs in, the TUN device in the host's namespace (``--tun-ns``).

Bench-only: the two appliances derive their static keys from fixed seeds (``--me``/``--peer`` names), so
the script needs no key files; never do this outside a benchmark.

    ip netns exec appA .venv/bin/python bench/e2e_appliance.py --me a --peer b --tun-ns hostA \
        --local 198.51.100.1 --remote 198.51.100.2 --tun-addr 192.0.2.1/24 --remote-net 203.0.113.0/24

Prints "ready" once the TUN device is up; runs until SIGTERM/SIGINT; prints the counters on exit.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import signal
import sys

import trio

from scion_appliance import tun
from scion_appliance.gateway import Gateway, PeerSpec
from scion_appliance.gateway.ip_tunnel import IpTunnel
from scion_appliance.gateway.traffic_policy import TrafficPolicy
from scion_appliance.paths.source import PathInfo, StaticPathSource
from scion_appliance.scion.addr import IA
from scion_appliance.tunnel.keys import public_key

IAS = {"a": "1-ff00:0:110", "b": "1-ff00:0:111"}
PORT = 30100


def bench_key(name: str) -> bytes:
    return hashlib.blake2b(b"scion-appliance bench_e2e " + name.encode(), digest_size=32).digest()


async def main(args: argparse.Namespace) -> None:
    me, peer = IA.parse(IAS[args.me]), IA.parse(IAS[args.peer])
    local, remote = ipaddress.IPv4Address(args.local), ipaddress.IPv4Address(args.remote)
    # A direct path (empty SCION path): the peer's underlay address is the next hop.
    paths = StaticPathSource({str(peer): [PathInfo("direct", 0, (), b"", (str(remote), PORT))]})
    gw = Gateway(ia=me, host=local, port=PORT, private_key=bench_key(args.me), path_source=paths,
                 peers=[PeerSpec(args.peer, peer, remote, PORT, public_key(bench_key(args.peer)), remote)])
    policy = TrafficPolicy({peer: [args.remote_net]})
    own_net = str(ipaddress.ip_interface(args.tun_addr).network)
    with tun.TunDevice.open("sig0", netns=args.tun_ns, mtu=args.mtu, addresses=[args.tun_addr],
                            routes=[args.remote_net], offload=args.offload,
                            txqueuelen=args.txqueuelen or None) as dev:
        async with gw:
            tunnel = IpTunnel(gw, dev, policy, frame_size=args.frame_size, udp_write_segs=args.udp_write_segs,
                              threads=args.threads)
            async with trio.open_nursery() as nursery:
                await nursery.start(tunnel.run)
                print("ready", own_net, flush=True)
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                    async for _ in sigs:
                        break
                snap = {"gateway": dict(gw.counters), "tunnel": tunnel.snapshot()["totals"]}
                print(json.dumps(snap), flush=True)
                nursery.cancel_scope.cancel()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--me", choices=IAS, required=True)
    p.add_argument("--peer", choices=IAS, required=True)
    p.add_argument("--tun-ns", required=True)
    p.add_argument("--local", required=True)
    p.add_argument("--remote", required=True)
    p.add_argument("--tun-addr", required=True)
    p.add_argument("--remote-net", required=True)
    p.add_argument("--mtu", type=int, default=1420)
    p.add_argument("--offload", action=argparse.BooleanOptionalAction, default=True,
                   help="virtio-net header TUN with TSO/USO and GRO-coalesced writes (default on)")
    p.add_argument("--txqueuelen", type=int, default=tun.TXQUEUELEN,
                   help="the TUN device's transmit queue (packets; 0: the kernel's default, 500)")
    p.add_argument("--threads", action=argparse.BooleanOptionalAction, default=True,
                   help="the data path in the two C worker threads (default; [datapath] threads)")
    p.add_argument("--udp-write-segs", type=int, default=64,
                   help="UDP datagrams per coalesced TUN write on the receiving side (1: each alone)")
    # 1396: the largest frame whose sealed datagram (+32 envelope, +44 SCION/UDP on an empty path, +28
    # underlay IPv4/UDP) fits the 1500-byte veth unfragmented, as UDP GSO needs.
    p.add_argument("--frame-size", type=int, default=1396, help="SIG frame size (bytes)")
    trio.run(main, p.parse_args())
    sys.exit(0)
