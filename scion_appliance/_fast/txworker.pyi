from typing_extensions import Buffer

from scion_appliance._fast.aead import AeadKey
from scion_appliance._fast.pipeline import PrefixTable

REMOTES: int
HEADROOM: int
COUNTER_NAMES: tuple[str, ...]

class TxWorker:
    batch: int
    stride: int
    frame_size: int
    handoff_slots: int
    send_slots: int
    def __init__(
        self,
        tun_fd: int,
        vnet_hdr: bool,
        sock_fd: int,
        prefixes: PrefixTable,
        batch: int = 64,
        stride: int = 2048,
        frame_size: int = 1472,
        msg_type: int = 4,
        handoff_slots: int = 1024,
        send_slots: int = 4096,
    ) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    @property
    def running(self) -> bool: ...
    @property
    def wake_fd(self) -> int: ...
    @property
    def gso(self) -> bool: ...
    def arm(
        self,
        remote: int,
        key: AeadKey,
        receiver_index: int,
        session_id: int,
        stream_id: int,
        seq: int,
        header_template: Buffer,
        dest: Buffer,
        path_slot: int,
    ) -> int: ...
    def disarm(self, remote: int) -> int | None: ...
    def armed(self, remote: int) -> AeadKey | None: ...
    def take_handoff(self) -> list[tuple[int, bytes]]: ...
    def take_sends(self) -> list[tuple[int, int, int, int, int, float, bool]]: ...
    def counters(self) -> dict[str, int]: ...
    def remote_counters(self, remote: int) -> dict[str, float]: ...
