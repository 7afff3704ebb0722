from types import TracebackType
from typing import Any

from scion_appliance._fast.aead import AeadKey
from scion_appliance._fast.pipeline import Deframer, PrefixTable
from scion_appliance._fast.replay import ReplayWindow

DATAGRAM: int
ACK: int
FRAME: int
MAX_LANES: int
HANDOFF_SLOTS: int
DATA_TYPE: int

# (kind, receiver, remote, counter, received, udpio address record, data); "received" is the route's running
# count in an ACK record and the frame's number (for stream_idle) in a FRAME record
Record = tuple[int, int, int, int, int, bytes, bytes]

class _Held:
    def __enter__(self) -> _Held: ...
    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool: ...

class RxWorker:
    port: int
    stopped: bool
    def __init__(
        self,
        sock_fd: int,
        gro: bool,
        tun_fd: int,
        vnet_hdr: bool,
        udp_write_segs: int,
        port: int,
        prefixes: PrefixTable,
        batch: int = 64,
        stride: int = 2048,
        ack_interval: float = 0.01,
        msg_type: int = 4,
    ) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> dict[str, Any]: ...
    @property
    def running(self) -> bool: ...
    @property
    def failed_errno(self) -> int: ...
    @property
    def wake_fd(self) -> int: ...
    def locked(self) -> _Held: ...
    def arm(
        self,
        receiver: int,
        key: AeadKey,
        window: ReplayWindow,
        deframer: Deframer,
        remote: int,
        expires_at: float = ...,
    ) -> None: ...
    def disarm(self, receiver: int) -> dict[str, Any] | None: ...
    def armed(self, receiver: int) -> bool: ...
    def receivers(self) -> list[int]: ...
    def stream_idle(self, remote: int, seen: int) -> None: ...
    def take_handoff(self, limit: int = ...) -> list[Record]: ...
    def counters(self) -> dict[str, Any]: ...

def now() -> float: ...
