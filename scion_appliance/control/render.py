"""Reading the daemon's documents for people: health assessment and ``wg show``-style text.

Rules kept here:
- ``assess`` decides the CLI's exit code from the status document alone: the daemon's own ``state``,
  plus any peer or path whose ``state`` is ``down`` (so an out-of-date ``state`` cannot hide one). A
  document without a known ``state`` is a protocol error (exit 4), never a guess.
- Renderers never fail on a missing optional field: they print ``-`` or leave the line out. Shapes are
  in docs/control-api.md.
- Sizes are IEC (KiB, MiB) with two decimals and ages read like ``1 minute, 12 seconds ago``, as
  ``wg show`` prints them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scion_appliance.control.client import ProtocolError

STATES = ("healthy", "degraded", "starting", "stopping")


def assess(doc: Any) -> tuple[bool, list[str]]:
    """(healthy, problems) from a status document; ``ProtocolError`` if it is not one."""
    if not isinstance(doc, Mapping):
        raise ProtocolError("the status document is not a JSON object")
    state = doc.get("state")
    if state not in STATES:
        raise ProtocolError(
            f"the status document has no known state (found {state!r}; expected one of {STATES})"
        )
    problems = [str(p) for p in doc.get("problems") or [] if p]
    peers = doc.get("peers", [])
    paths = doc.get("paths", {})
    peers = [] if peers is None else peers
    paths = {} if paths is None else paths
    if not isinstance(peers, list) or not isinstance(paths, Mapping):
        raise ProtocolError("the status document's peers must be a list and its paths an object")
    for peer in peers:
        if isinstance(peer, Mapping) and peer.get("state") == "down":
            line = f"peer {peer.get('name', '?')} is down"
            if line not in problems:
                problems.append(line)
    for dst, pset in paths.items():
        for path in (pset or {}).get("paths") or [] if isinstance(pset, Mapping) else []:
            if isinstance(path, Mapping) and path.get("state") == "down":
                line = f"path {path.get('id', '?')} to {dst} is down"
                if line not in problems:
                    problems.append(line)
    if state != "healthy" and not problems:
        problems.append(f"the daemon reports {state}")
    return (state == "healthy" and not problems), problems


# -- small formatters --------------------------------------------------------------------------------


def iec_bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return "-"
    if n < 1024:
        return f"{int(n)} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024.0
        if value < 1024.0 or unit == "PiB":
            return f"{value:.2f} {unit}"
    raise AssertionError("unreachable")


def ago(seconds: Any) -> str:
    """``wg show``'s phrasing: '1 minute, 12 seconds ago'; 'Now' below a second."""
    if not isinstance(seconds, int | float):
        return "never"
    s = int(seconds)
    if s <= 0:
        return "Now"
    parts = []
    for name, size in (("year", 365 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if s >= size:
            count, s = divmod(s, size)
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return ", ".join(parts) + " ago"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return ago(seconds).removesuffix(" ago") if seconds >= 1 else f"{seconds:.1f} seconds"


def ms(seconds: Any) -> str:
    return f"{seconds * 1000:.1f} ms" if isinstance(seconds, int | float) else "-"


def percent(ratio: Any) -> str:
    return f"{ratio * 100:.1f}%" if isinstance(ratio, int | float) else "-"


# -- renderers ---------------------------------------------------------------------------------------


def render_paths(dst: str, pset: Mapping[str, Any], indent: str = "  ") -> list[str]:
    active = pset.get("active")
    pinned = pset.get("pinned")
    head = f"{indent}paths to {dst}: "
    head += f"active {active}" if active else "no active path"
    if pset.get("reason"):
        head += f" ({pset['reason']})"
    if pinned:
        head += f", pinned to {pinned}"
    lines = [head]
    paths = pset.get("paths") or []
    width = max((len(str(p.get("id", "?"))) for p in paths if isinstance(p, Mapping)), default=2)
    for p in paths:
        if not isinstance(p, Mapping):
            continue
        mark = "*" if p.get("active") or (active is not None and p.get("id") == active) else " "
        hops = p.get("hop_count")
        pid, pstate = str(p.get("id", "?")), str(p.get("state", "?"))
        line = (
            f"{indent}{mark} {pid:<{width}}  {pstate:<8}  rtt {ms(p.get('rtt_s')):>9}"
            f"  p95 {ms(p.get('rtt_p95_s')):>9}  loss {percent(p.get('loss')):>6}"
        )
        if isinstance(hops, int):
            line += f"  {hops} hop{'' if hops == 1 else 's'}"
        if p.get("sequence"):
            line += f"  {p['sequence']}"
        lines.append(line.rstrip())
    if not paths:
        lines.append(f"{indent}  (no candidate paths)")
    return lines


def render_peer(peer: Mapping[str, Any], paths: Mapping[str, Any] | None = None) -> list[str]:
    name = peer.get("name", "?")
    lines = [f"peer: {name}"]
    if peer.get("public_key"):
        lines.append(f"  public key: {peer['public_key']}")
    ia = peer.get("isd_as", "?")
    endpoint = f"{ia} {peer['endpoint']}" if peer.get("endpoint") else str(ia)
    lines.append(f"  endpoint: {endpoint}")
    prefixes = peer.get("remote_prefixes")
    if isinstance(prefixes, Sequence) and not isinstance(prefixes, str):
        lines.append(f"  allowed ips: {', '.join(map(str, prefixes)) or '(none)'}")
    lines.append(f"  state: {peer.get('state', '?')}")
    lines.append(f"  latest handshake: {ago(peer.get('latest_handshake_age_s'))}")
    transfer = peer.get("transfer") or {}
    if isinstance(transfer, Mapping) and ("rx_bytes" in transfer or "tx_bytes" in transfer):
        lines.append(
            f"  transfer: {iec_bytes(transfer.get('rx_bytes', 0))} received, "
            f"{iec_bytes(transfer.get('tx_bytes', 0))} sent"
        )
    if paths is not None and isinstance(paths.get(ia), Mapping):
        lines.extend(render_paths(str(ia), paths[ia]))
    return lines


def render_status(doc: Mapping[str, Any]) -> str:
    healthy, problems = assess(doc)
    ident = doc.get("identity") or {}
    ifaces = doc.get("interfaces") or {}
    underlay = ifaces.get("underlay") or {}
    lines = [f"interface: scion-appliance {ident.get('isd_as', '?')}"]
    if ident.get("public_key"):
        lines.append(f"  public key: {ident['public_key']}")
    lines.append("  private key: (hidden)")
    if underlay.get("port") is not None:
        port = f"  listening port: {underlay['port']}"
        if underlay.get("sig_port"):
            port += f" (plain SIG {underlay['sig_port']})"
        lines.append(port)
    tun = ifaces.get("tun")
    if isinstance(tun, Mapping):
        up = "up" if tun.get("up") else "down"
        words = [str(tun.get("name", "?")), str(tun.get("address") or ""), f"mtu {tun.get('mtu', '?')}", up]
        lines.append("  tun: " + " ".join(w for w in words if w))
    lines.append(f"  version: {doc.get('version', '?')}, up {duration(doc.get('uptime_s'))}")
    state = "healthy" if healthy else f"{doc.get('state')}: " + "; ".join(problems)
    if not healthy and doc.get("state") == "healthy":
        state = "degraded: " + "; ".join(problems)
    lines.append(f"  state: {state}")
    sessions = doc.get("sessions") or {}
    counters = doc.get("counters") or {}
    if isinstance(sessions, Mapping) and "active" in sessions:
        lines.append(f"  sessions: {sessions['active']}")
    if isinstance(counters, Mapping) and counters:
        nbytes = counters.get("bytes") or {}
        packets = counters.get("packets") or {}
        lines.append(
            f"  transfer: {iec_bytes(nbytes.get('rx', 0))} received, {iec_bytes(nbytes.get('tx', 0))} sent "
            f"({packets.get('rx', 0)} / {packets.get('tx', 0)} packets)"
        )
        drops = counters.get("drops") or {}
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(drops.items()) if v) or "none"
        lines.append(f"  drops: {dropped}")
        lines.append(
            f"  replay rejects: {counters.get('replay_rejects', 0)}, "
            f"failovers: {counters.get('failovers', 0)}, handshakes: {counters.get('handshakes', 0)} "
            f"({counters.get('handshake_failures', 0)} failed)"
        )
    paths = doc.get("paths") or {}
    shown: set[str] = set()
    for peer in doc.get("peers") or []:
        if isinstance(peer, Mapping):
            lines.append("")
            lines.extend(render_peer(peer, paths))
            shown.add(str(peer.get("isd_as")))
    for dst, pset in paths.items():
        if dst not in shown and isinstance(pset, Mapping):
            lines.append("")
            lines.extend(render_paths(dst, pset, indent=""))
    return "\n".join(lines)


def render_peers(doc: Any) -> str:
    peers = doc.get("peers") if isinstance(doc, Mapping) else None
    if not isinstance(peers, list):
        raise ProtocolError("the peers document has no peers list")
    if not peers:
        return "no peers configured"
    blocks = ["\n".join(render_peer(p)) for p in peers if isinstance(p, Mapping)]
    return "\n\n".join(blocks)
