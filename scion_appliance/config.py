"""The appliance's configuration: a TOML file read into frozen dataclasses, checked against a schema in code.

Rules kept here:
- The schema is the dataclasses below: every setting is a ``setting(...)`` with what it expects and how
  it is parsed. Sections are tables; ``[[peers]]`` is an array of tables; ``[router]`` and ``[tun]`` are
  optional (absent: no border router, no TUN device).
- Every error is a ``ConfigError`` naming the file, the dotted key (``peers[1].public_key``), what was
  expected and what was found. Unknown keys are errors too, with a "did you mean" when one is close.
- Relative paths in the file are taken relative to the file's own directory.
- Reading the config starts nothing and touches no file but the config itself, unless ``check_files``
  asks for the files it names (key files, topology) to be checked too.
- ISD-AS values are parsed by ``scion_appliance.scion.addr.IA``; the config holds ``IA`` objects.
"""

# The schema's fields are built by setting()/section(), which return dataclasses.field(...): RUF009 does
# not see through them.
# ruff: noqa: RUF009

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from scion_appliance.errors import OperatorError
from scion_appliance.scion.addr import IA, AddressError

DEFAULT_CONFIG_PATH = Path("/etc/scion-appliance/appliance.toml")
DEFAULT_STATE_DIR = Path("/var/lib/scion-appliance")
DEFAULT_CONTROL_SOCKET = Path("/run/scion-appliance/control.sock")
SIG_PORT = 30056  # the reference SCION IP gateway's data port: plain (unsealed) frame compatibility
APPLIANCE_PORT = 30057  # our sealed tunnel: handshakes, cookies and sealed data share it

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ConfigError(OperatorError):
    """A config file problem: ``file: key: expected X, found Y``."""

    def __init__(self, file: Path | str, key: str, expected: str, found: str) -> None:
        self.file = str(file)
        self.key = key
        self.expected = expected
        self.found = found
        where = f"{self.file}: {key}" if key else self.file
        super().__init__(f"{where}: expected {expected}, found {found}")


class Invalid(Exception):
    """Raised by a value parser: what was found, and optionally a more precise expectation."""

    def __init__(self, found: str, expected: str | None = None) -> None:
        super().__init__(found)
        self.found = found
        self.expected = expected


@dataclass(frozen=True)
class Ctx:
    file: Path

    @property
    def base(self) -> Path:
        return self.file.parent


Parser = Callable[[Any, Ctx], Any]


def describe(value: Any) -> str:
    """A short, typed description of a TOML value for 'found ...'."""
    kinds = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    kind = next((name for t, name in kinds.items() if type(value) is t), type(value).__name__)
    if isinstance(value, dict):
        return f"a table with keys {sorted(value)}" if value else "an empty table"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


def setting(
    expect: str,
    parse: Parser,
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    doc: str = "",
) -> Any:
    """A leaf setting; without a default (or factory) it is required."""
    meta = {"expect": expect, "parse": parse, "doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, optional: bool = False, required: bool = False) -> Any:
    if required:
        return field(metadata={"section": cls, "expect": f"a [{cls.__name__.lower()}] table"})
    if optional:
        return field(default=None, metadata={"section": cls})
    return field(default_factory=cls, metadata={"section": cls})


def array_of(cls: type) -> Any:
    return field(default_factory=tuple, metadata={"array": cls})


# -- value parsers --------------------------------------------------------------------------------------


def p_str(value: Any, ctx: Ctx) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(describe(value) if value != "" else "an empty string")
    return value


def p_bool(value: Any, ctx: Ctx) -> bool:
    if not isinstance(value, bool):
        raise Invalid(describe(value))
    return value


def p_int(lo: int, hi: int) -> Parser:
    def parse(value: Any, ctx: Ctx) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(describe(value))
        if not lo <= value <= hi:
            raise Invalid(f"{value} (out of range)")
        return value

    return parse


def p_float(lo: float, hi: float, lo_open: bool = False) -> Parser:
    def parse(value: Any, ctx: Ctx) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise Invalid(describe(value))
        v = float(value)
        if v != v or v < lo or v > hi or (lo_open and v == lo):
            raise Invalid(f"{value} (out of range)")
        return v

    return parse


def p_choice(*choices: str) -> Parser:
    def parse(value: Any, ctx: Ctx) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise Invalid(describe(value))
        return value.lower()

    return parse


def p_path(value: Any, ctx: Ctx) -> Path:
    if not isinstance(value, str) or not value:
        raise Invalid(describe(value) if value != "" else "an empty string")
    path = Path(value)
    return path if path.is_absolute() else ctx.base / path


def p_ia(value: Any, ctx: Ctx) -> IA:
    if not isinstance(value, str):
        raise Invalid(describe(value))
    try:
        return IA.parse(value)
    except AddressError as e:
        raise Invalid(f"{value!r} ({e})") from None


def p_list(item: Parser, item_expect: str) -> Parser:
    def parse(value: Any, ctx: Ctx) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise Invalid(describe(value))
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v, ctx))
            except Invalid as e:
                raise Invalid(f"item [{i}] {e.found}", f"an array of {e.expected or item_expect}") from None
        return tuple(out)

    return parse


def p_network(value: Any, ctx: Ctx) -> IPNetwork:
    if not isinstance(value, str):
        raise Invalid(describe(value))
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise Invalid(f"{value!r} ({e})") from None


def p_interface(value: Any, ctx: Ctx) -> IPInterface:
    if not isinstance(value, str) or "/" not in value:
        raise Invalid(describe(value) + ("" if not isinstance(value, str) else ", no /prefix length"))
    try:
        return ipaddress.ip_interface(value)
    except ValueError as e:
        raise Invalid(f"{value!r} ({e})") from None


def p_ip(value: Any, ctx: Ctx) -> IPAddress:
    if not isinstance(value, str):
        raise Invalid(describe(value))
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise Invalid(describe(value)) from None


def p_endpoint(value: Any, ctx: Ctx) -> tuple[IPAddress, int | None]:
    """``IP``, ``IPv4:port`` or ``[IPv6]:port``."""
    if not isinstance(value, str):
        raise Invalid(describe(value))
    host, port_text = value, None
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise Invalid(describe(value))
            port_text = rest[1:]
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise Invalid(describe(value)) from None
    if port_text is None:
        return ip, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise Invalid(f"{value!r} (port out of range)")
    return ip, int(port_text)


def p_public_key(value: Any, ctx: Ctx) -> bytes:
    if not isinstance(value, str):
        raise Invalid(describe(value))
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{value!r} (not base64)") from None
    if len(raw) != 32:
        raise Invalid(f"{value!r} ({len(raw)} bytes after decoding)")
    return raw


def p_mode(value: Any, ctx: Ctx) -> int:
    # TOML can write 0o660 directly; a string "0660" is what people copy from chmod.
    if isinstance(value, str) and value and all(c in "01234567" for c in value.removeprefix("0o")):
        mode = int(value.removeprefix("0o"), 8)
    elif isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        raise Invalid(describe(value))
    if not 0 <= mode <= 0o777:
        raise Invalid(f"{value!r} (out of range)")
    return mode


def p_ifname(value: Any, ctx: Ctx) -> str:
    ok = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
    if not isinstance(value, str) or not 1 <= len(value) <= 15 or any(c not in ok for c in value):
        raise Invalid(describe(value))
    return value


def p_netns(value: Any, ctx: Ctx) -> str:
    # As iproute2 accepts them: a file name under /run/netns.
    ok = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or any(c not in ok for c in value):
        raise Invalid(describe(value))
    if value in (".", ".."):
        raise Invalid(describe(value))
    return value


def p_peer_name(value: Any, ctx: Ctx) -> str:
    # Names appear in URLs of the control API (/v1/peers/{name}/rekey) and in log lines.
    ok = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or any(c not in ok for c in value):
        raise Invalid(describe(value))
    return value


def p_keepalive(value: Any, ctx: Ctx) -> float:
    v: float = p_float(0.0, 3600.0)(value, ctx)
    if 0.0 < v < 0.1:
        raise Invalid(f"{value} (out of range)")
    return v


def p_url(value: Any, ctx: Ctx) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or len(value) < 10:
        raise Invalid(describe(value))
    return value.rstrip("/")


def p_optional(inner: Parser) -> Parser:
    """An empty string means "not set" (handy for commenting a value out in place)."""

    def parse(value: Any, ctx: Ctx) -> Any:
        if value == "":
            return None
        return inner(value, ctx)

    return parse


IA_EXPECT = "an ISD-AS like 1-ff00:0:110"


# -- the schema -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    private_key_file: Path = setting(
        "a path to the X25519 private key file (written by `scion-appliance keygen`)", p_path
    )
    isd_as: IA = setting(IA_EXPECT, p_ia, doc="the ISD-AS this appliance serves")


@dataclass(frozen=True)
class State:
    dir: Path = setting("a directory path", p_path, DEFAULT_STATE_DIR)


@dataclass(frozen=True)
class Control:
    socket: Path = setting("a path for the control socket", p_path, DEFAULT_CONTROL_SOCKET)
    mode: int = setting('a file mode like 0o660 or "0660"', p_mode, 0o660)
    group: str | None = setting("a group name", p_optional(p_str), None)


@dataclass(frozen=True)
class Telemetry:
    otlp_endpoint: str | None = setting(
        'an http(s) URL like "http://127.0.0.1:4318" (or "" for off)', p_optional(p_url), None
    )
    service_name: str = setting("a non-empty string", p_str, "scion-appliance")
    export_interval_s: float = setting(
        "a number of seconds > 0 and <= 3600", p_float(0.0, 3600.0, True), 10.0
    )


@dataclass(frozen=True)
class Logging:
    level: str = setting(
        'one of "debug", "info", "warning", "error"', p_choice("debug", "info", "warning", "error"), "info"
    )


@dataclass(frozen=True)
class Underlay:
    listen_address: IPAddress = setting(
        'an IP address like "0.0.0.0" or "::"', p_ip, factory=lambda: ipaddress.ip_address("0.0.0.0")
    )
    port: int = setting("a UDP port 1-65535", p_int(1, 65535), APPLIANCE_PORT)
    sig_port: int = setting("a UDP port 1-65535, or 0 to turn plain SIG mode off", p_int(0, 65535), SIG_PORT)


@dataclass(frozen=True)
class Router:
    topology: Path = setting("a path to SCION's topology.json", p_path)
    keys_dir: Path = setting("a path to the directory holding master0.key", p_path)


@dataclass(frozen=True)
class Peer:
    name: str = setting("a name of 1-64 letters, digits, '.', '_' or '-'", p_peer_name)
    isd_as: IA = setting(IA_EXPECT, p_ia)
    # Required unless the peer is plain (a reference SCION IP gateway has no session and no key).
    public_key: bytes | None = setting(
        "32 bytes in base64 (as `scion-appliance keygen` prints)", p_optional(p_public_key), None
    )
    preshared_key_file: Path | None = setting(
        "a path to a 32-byte pre-shared key file", p_optional(p_path), None
    )
    remote_prefixes: tuple[IPNetwork, ...] = setting(
        'an array of IP prefixes like ["10.2.0.0/16"]',
        p_list(p_network, 'IP prefixes like "10.2.0.0/16"'),
        factory=tuple,
    )
    address: tuple[IPAddress, int | None] | None = setting(
        'the peer appliance\'s host inside its AS: "IP", "IP:port" or "[IPv6]:port"',
        p_optional(p_endpoint),
        None,
    )
    # Absent: the router of the peer's AS when [paths] catalogue lies in a lab directory (lab.json beside
    # it); otherwise required by `run` (an end host's SCMP echo goes to port 30041, not to the appliance).
    probe_address: IPAddress | None = setting(
        'the IP of a host in the peer\'s AS that answers SCMP echo, e.g. its border router "10.0.0.1"',
        p_optional(p_ip),
        None,
    )
    keepalive_s: float = setting(
        "seconds from 0.1 to 3600 between keepalives when nothing else was sent (or 0 for none)",
        p_keepalive,
        5.0,
    )
    # The peer is a reference SCION IP gateway (scionproto): SIG frames go unsealed between our
    # underlay.sig_port and its port 30056. No confidentiality, authenticity or replay protection.
    plain: bool = setting("true or false (true: an unsealed reference SCION IP gateway)", p_bool, False)


@dataclass(frozen=True)
class Tun:
    name: str = setting("an interface name of 1-15 letters, digits, '.', '_' or '-'", p_ifname, "scion0")
    address: IPInterface | None = setting(
        'an address with prefix length like "10.1.0.1/24"', p_optional(p_interface), None
    )
    mtu: int = setting("an MTU from 576 to 9000", p_int(576, 9000), 1400)
    # The kernel's TUN default (500) overflows under bursty LAN senders between two gateway reads.
    txqueuelen: int = setting("a transmit queue length from 1 to 100000 packets", p_int(1, 100_000), 1000)
    netns: str | None = setting(
        'the name of an existing network namespace for the device ("" = the service\'s own)',
        p_optional(p_netns),
        None,
    )


@dataclass(frozen=True)
class Paths:
    probe_interval_ms: int = setting("milliseconds from 10 to 60000", p_int(10, 60_000), 100)
    failover_rtt_threshold: float = setting(
        "a factor >= 1.0 (switch when the active path's RTT exceeds the best one's by this factor)",
        p_float(1.0, 1000.0),
        1.5,
    )
    failover_loss_threshold: float = setting("a loss ratio from 0.0 to 1.0", p_float(0.0, 1.0), 0.1)
    min_paths: int = setting("an integer from 1 to 64", p_int(1, 64), 2)
    exploration_probability: float = setting("a probability from 0.0 to 1.0", p_float(0.0, 1.0), 0.05)
    hysteresis_ms: int = setting("milliseconds from 0 to 600000", p_int(0, 600_000), 1000)
    select: str = setting('"latency" or "hops"', p_choice("latency", "hops"), "latency")
    spread: int = setting("the number of best paths to spread flows over, 1 to 16", p_int(1, 16), 1)
    preferred_ases: tuple[IA, ...] = setting("an array of ISD-AS", p_list(p_ia, IA_EXPECT), factory=tuple)
    excluded_ases: tuple[IA, ...] = setting("an array of ISD-AS", p_list(p_ia, IA_EXPECT), factory=tuple)
    # The path source: a path catalogue in the lab's paths.json format ({src: {dst: [path, ...]}}).
    # A SCION daemon as a source comes later; without a catalogue `run` has no paths to its peers.
    catalogue: Path | None = setting(
        "a path to a path catalogue (paths.json, as `scion-appliance lab up` writes it)",
        p_optional(p_path),
        None,
    )


@dataclass(frozen=True)
class Replay:
    window_size: int = setting("a multiple of 64 from 64 to 1048576", p_int(64, 1 << 20), 8192)


@dataclass(frozen=True)
class Datapath:
    # The data path runs in two C worker threads (TUN -> wire and wire -> TUN, the GIL released);
    # false keeps it in the event loop (one core, more Python per batch).
    threads: bool = setting(
        "true or false (true: the data path runs in two C worker threads; false keeps it in the event loop)",
        p_bool,
        True,
    )


@dataclass(frozen=True)
class Config:
    identity: Identity = section(Identity, required=True)
    state: State = section(State)
    control: Control = section(Control)
    telemetry: Telemetry = section(Telemetry)
    logging: Logging = section(Logging)
    underlay: Underlay = section(Underlay)
    router: Router | None = section(Router, optional=True)
    peers: tuple[Peer, ...] = array_of(Peer)
    tun: Tun | None = section(Tun, optional=True)
    paths: Paths = section(Paths)
    replay: Replay = section(Replay)
    datapath: Datapath = section(Datapath)
    source: Path = field(default=DEFAULT_CONFIG_PATH, metadata={"internal": True})

    def peer(self, name: str) -> Peer:
        for p in self.peers:
            if p.name == name:
                return p
        raise KeyError(name)

    def summary(self) -> str:
        """One line for `check-config`."""
        prefixes = sum(len(p.remote_prefixes) for p in self.peers)
        peers = ", ".join(f"{p.name} {p.isd_as}" for p in self.peers) or "none"
        tun = f"tun {self.tun.name} {self.tun.address or '(no address)'}" if self.tun else "no tun"
        tel = (
            f"telemetry to {self.telemetry.otlp_endpoint}"
            if self.telemetry.otlp_endpoint
            else "telemetry off"
        )
        plain = [p for p in self.peers if p.plain]
        sig = f" (+plain SIG {self.underlay.sig_port} for {len(plain)} peer(s))" if plain else ""
        router = ", router on" if self.router else ""
        return (
            f"{self.source}: ok: {self.identity.isd_as}, {len(self.peers)} peer(s) ({peers}), "
            f"{prefixes} remote prefix(es), {tun}, underlay {self.underlay.listen_address}:"
            f"{self.underlay.port}{sig}{router}, {tel}"
        )


# -- loading --------------------------------------------------------------------------------------------


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _unknown_key(ctx: Ctx, prefix: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean {_join(prefix, close[0])}?" if close else ""
    what = f"a key of [{prefix}]" if prefix else "a section"
    return ConfigError(ctx.file, _join(prefix, key), f"{what} ({', '.join(known)})", f"an unknown key{hint}")


def _build(cls: type, table: Any, prefix: str, ctx: Ctx) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(ctx.file, prefix, "a table", describe(table))
    spec = [f for f in fields(cls) if not f.metadata.get("internal")]
    known = [f.name for f in spec]
    for key in table:
        if key not in known:
            raise _unknown_key(ctx, prefix, key, known)
    kwargs: dict[str, Any] = {}
    for f in spec:
        key = _join(prefix, f.name)
        meta: Mapping[str, Any] = f.metadata
        if f.name not in table:
            if f.default is MISSING and f.default_factory is MISSING:
                expect = meta.get("expect") or "a table"
                raise ConfigError(ctx.file, key, expect, "nothing (this key is required)")
            continue
        raw = table[f.name]
        if "section" in meta:
            kwargs[f.name] = _build(meta["section"], raw, key, ctx)
        elif "array" in meta:
            if not isinstance(raw, list):
                raise ConfigError(ctx.file, key, f"an array of tables ([[{key}]])", describe(raw))
            kwargs[f.name] = tuple(
                _build(meta["array"], item, f"{key}[{i}]", ctx) for i, item in enumerate(raw)
            )
        else:
            try:
                kwargs[f.name] = meta["parse"](raw, ctx)
            except Invalid as e:
                raise ConfigError(ctx.file, key, e.expected or meta["expect"], e.found) from None
    return cls(**kwargs)


def _cross_checks(cfg: Config, ctx: Ctx) -> None:
    if cfg.replay.window_size % 64:
        raise ConfigError(
            ctx.file, "replay.window_size", "a multiple of 64 from 64 to 1048576", f"{cfg.replay.window_size}"
        )
    names: dict[str, int] = {}
    keys: dict[bytes, int] = {}
    owner: list[tuple[IPNetwork, str]] = []
    for i, p in enumerate(cfg.peers):
        if p.name in names:
            raise ConfigError(
                ctx.file,
                f"peers[{i}].name",
                "a name no other peer has",
                f"{p.name!r} (also peers[{names[p.name]}])",
            )
        names[p.name] = i
        if p.public_key is None and not p.plain:
            raise ConfigError(
                ctx.file,
                f"peers[{i}].public_key",
                "32 bytes in base64 (the peer's `scion-appliance pubkey`); only a plain peer has none",
                "nothing (this key is required for a sealed peer)",
            )
        if p.public_key is not None and p.public_key in keys:
            raise ConfigError(
                ctx.file,
                f"peers[{i}].public_key",
                "a key no other peer has",
                f"the key of peers[{keys[p.public_key]}]",
            )
        if p.public_key is not None:
            keys[p.public_key] = i
        if p.isd_as == cfg.identity.isd_as:
            raise ConfigError(
                ctx.file,
                f"peers[{i}].isd_as",
                f"an ISD-AS other than our own ({cfg.identity.isd_as})",
                str(p.isd_as),
            )
        if p.plain and not cfg.underlay.sig_port:
            raise ConfigError(
                ctx.file,
                "underlay.sig_port",
                f"a UDP port for plain SIG frames (30056), since peers[{i}] ({p.name}) is plain",
                "0 (plain SIG off)",
            )
        if p.plain and cfg.underlay.sig_port == cfg.underlay.port:
            raise ConfigError(
                ctx.file,
                "underlay.sig_port",
                f"a port other than underlay.port ({cfg.underlay.port}): plain frames need their own socket",
                str(cfg.underlay.sig_port),
            )
        for j, net in enumerate(p.remote_prefixes):
            for other, where in owner:
                if net.version == other.version and net.overlaps(other):
                    raise ConfigError(
                        ctx.file,
                        f"peers[{i}].remote_prefixes[{j}]",
                        "a prefix that no other entry of the traffic policy covers",
                        f"{net} (overlaps {other} at {where})",
                    )
            owner.append((net, f"peers[{i}].remote_prefixes"))
    both = set(cfg.paths.preferred_ases) & set(cfg.paths.excluded_ases)
    if both:
        raise ConfigError(
            ctx.file,
            "paths.excluded_ases",
            "ASes not also in paths.preferred_ases",
            ", ".join(sorted(str(ia) for ia in both)),
        )
    if cfg.tun and cfg.tun.address and cfg.tun.address.version == 6 and cfg.tun.mtu < 1280:
        raise ConfigError(
            ctx.file, "tun.mtu", "at least 1280 with an IPv6 address (RFC 8200)", str(cfg.tun.mtu)
        )


def _check_file(ctx: Ctx, key: str, path: Path, secret: bool) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(ctx.file, key, "an existing file", f"{path} (no such file)") from None
    except PermissionError:
        raise ConfigError(ctx.file, key, "a file this user can read", f"{path} (permission denied)") from None
    if secret and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            ctx.file,
            key,
            "a key file only its owner can read (chmod 600)",
            f"{path} with mode {st.st_mode & 0o777:o}",
        )
    if not os.access(path, os.R_OK):
        raise ConfigError(ctx.file, key, "a file this user can read", f"{path} (permission denied)")


def check_files(cfg: Config) -> None:
    """Check that the files the config names exist, are readable, and key files are private."""
    ctx = Ctx(cfg.source)
    _check_file(ctx, "identity.private_key_file", cfg.identity.private_key_file, secret=True)
    for i, p in enumerate(cfg.peers):
        if p.preshared_key_file is not None:
            _check_file(ctx, f"peers[{i}].preshared_key_file", p.preshared_key_file, secret=True)
    if cfg.paths.catalogue is not None:
        _check_file(ctx, "paths.catalogue", cfg.paths.catalogue, secret=False)
    if cfg.router:
        _check_file(ctx, "router.topology", cfg.router.topology, secret=False)
        _check_file(ctx, "router.keys_dir", cfg.router.keys_dir / "master0.key", secret=True)


def parse(text: str, source: Path | str = DEFAULT_CONFIG_PATH) -> Config:
    """Parse config text (``source`` names the file in errors and anchors relative paths)."""
    ctx = Ctx(Path(source))
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(ctx.file, "", "valid TOML", f"a syntax error: {e}") from None
    cfg: Config = _build(Config, table, "", ctx)
    cfg = Config(
        **{f.name: getattr(cfg, f.name) for f in fields(Config) if f.name != "source"}, source=ctx.file
    )
    _cross_checks(cfg, ctx)
    return cfg


def load(path: Path | str = DEFAULT_CONFIG_PATH, check_files_exist: bool = False) -> Config:
    """Read and check the config file; ``ConfigError`` on any problem."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            p, "", "a config file", "no such file (see packaging/appliance.example.toml)"
        ) from None
    except PermissionError:
        raise ConfigError(p, "", "a config file this user can read", "permission denied") from None
    except IsADirectoryError:
        raise ConfigError(p, "", "a config file", "a directory") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(p, "", "UTF-8 text", f"an invalid byte at offset {e.start}") from None
    cfg = parse(text, p)
    if check_files_exist:
        check_files(cfg)
    return cfg
