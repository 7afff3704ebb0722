from types import TracebackType
from typing import Self

from typing_extensions import Buffer

from scion_appliance._fast.replay import ReplayWindow

KEY_LEN: int
HEADER_LEN: int
TAG_LEN: int
OVERHEAD: int
NONCE_LEN: int
TYPE_DATA: int
REJECT_AFTER_MESSAGES: int

DROP_MALFORMED: int
DROP_TYPE: int
DROP_RECEIVER: int
DROP_REPLAYED: int
DROP_FORGED: int
DROP_EXHAUSTED: int
DROP_REASONS: tuple[str, ...]

class KeyClosedError(RuntimeError): ...

class EnvelopeError(ValueError):
    reason: int
    reason_name: str
    def __init__(self, reason: int, detail: str = ...) -> None: ...

def parse_header(data: Buffer) -> tuple[int, int, int]: ...
def read_headers(
    buf: Buffer,
    stride: int,
    lengths: Buffer,
    status: Buffer,
    counters: Buffer,
    receivers: Buffer | None = None,
    *,
    off: int = 0,
    offsets: Buffer | None = None,
    msg_type: int = ...,
) -> int: ...

class AeadKey:
    def __init__(self, key: Buffer, send_counter: int = 0, protect_idle: bool = False) -> None: ...
    def close(self) -> None: ...
    def wipe(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def send_counter(self) -> int: ...
    def seal_batch(
        self,
        buf: Buffer,
        stride: int,
        lengths: Buffer,
        status: Buffer,
        receiver: int,
        *,
        off: int = 0,
        offsets: Buffer | None = None,
        counters: Buffer | None = None,
        msg_type: int = ...,
    ) -> int: ...
    def open_batch(
        self,
        buf: Buffer,
        stride: int,
        lengths: Buffer,
        status: Buffer,
        counters: Buffer,
        *,
        off: int = 0,
        offsets: Buffer | None = None,
        receiver: int = -1,
        window: ReplayWindow | None = None,
        msg_type: int = ...,
    ) -> int: ...
    def seal(self, receiver: int, plaintext: Buffer, *, msg_type: int = ...) -> bytes: ...
    def open(
        self,
        envelope: Buffer,
        *,
        receiver: int = -1,
        window: ReplayWindow | None = None,
        msg_type: int = ...,
    ) -> tuple[int, bytes]: ...
    def seal_raw(self, nonce: Buffer, ad: Buffer, plaintext: Buffer) -> bytes: ...
    def open_raw(self, nonce: Buffer, ad: Buffer, ciphertext: Buffer) -> bytes: ...
