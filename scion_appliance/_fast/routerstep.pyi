"""Border-router path processing over one packet or a batch (see routerstep.pyx)."""

from typing_extensions import Buffer

from scion_appliance._fast.codec import ScionRecords

OK: int
N_REASONS: int
ACT_NONE: int
ACT_FORWARD: int
ACT_SIBLING: int
ACT_DELIVER: int
F_XOVER: int
F_PEERING: int
F_CONSDIR: int
MODE_TABLE: int
MODE_INGRESS_ONLY: int
MODE_EGRESS_ALL: int
LINK_NONE: int
LINK_CORE: int
LINK_PARENT: int
LINK_CHILD: int
LINK_PEER: int
IF_OWNED: int
IF_DOWN: int

class RouterStep:
    def __init__(self, hop_key: bytes, *, mode: int = ..., local_ia: int = 0) -> None: ...
    @property
    def mode(self) -> int: ...
    @property
    def local_ia(self) -> int: ...
    def set_interface(self, ifid: int, link_type: int, *, owned: bool, up: bool = True) -> None: ...
    def set_up(self, ifid: int, up: bool) -> None: ...
    def remove_interface(self, ifid: int) -> None: ...
    def interface(self, ifid: int) -> int: ...
    def step(
        self, packet: bytearray | memoryview, *, length: int = -1, ingress: int = 0, now: int
    ) -> tuple[int, int, int, int, int]: ...
    def batch(
        self,
        buf: bytearray | memoryview,
        lens: memoryview,
        n: int,
        stride: int,
        ingress: int,
        now: int,
        reason: bytearray | memoryview,
        action: bytearray | memoryview,
        egress: memoryview,
        pointer: memoryview,
        order: memoryview,
        group_off: memoryview,
        group_key: memoryview,
        recs: ScionRecords | None = None,
    ) -> tuple[int, int]: ...
    def bench_batch(
        self,
        work: bytearray | memoryview,
        pristine: bytes | bytearray | memoryview,
        lens: memoryview,
        n: int,
        stride: int,
        ingress: int,
        now: int,
        hdr_copy: int,
        rounds: int,
        restore_off: int = 0,
        recs: ScionRecords | None = None,
    ) -> int: ...

def deliver_record(packet: Buffer, recs: ScionRecords, i: int = 0) -> None: ...
def split_local(
    buf: Buffer,
    stride: int,
    recs: ScionRecords,
    order: Buffer,
    start: int,
    end: int,
    host: bytes,
    port: int,
    local_out: Buffer,
    rest_out: Buffer,
) -> tuple[int, int]: ...
def take_slots(
    src_buf: Buffer,
    src_stride: int,
    src_lens: Buffer,
    src_addrs: Buffer,
    src_recs: ScionRecords,
    slots: Buffer,
    count: int,
    dst_buf: Buffer,
    dst_stride: int,
    dst_lens: Buffer,
    dst_addrs: Buffer,
    dst_recs: ScionRecords,
) -> int: ...

def _c_limit(
    hop_key: bytes,
    buf: bytes | bytearray | memoryview,
    lens: memoryview,
    n: int,
    stride: int,
    hdr_copy: int,
    blocks: int,
    rounds: int,
) -> int: ...
