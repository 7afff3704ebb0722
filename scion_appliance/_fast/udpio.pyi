from typing_extensions import Buffer

ADDR_SIZE: int

def new_addrs(n: int) -> bytearray: ...
def addr_pack(host: str, port: int, scope_id: int = ...) -> bytes: ...
def addr_set(addrs: Buffer, i: int, host: str, port: int) -> None: ...
def addr_get(addrs: Buffer, i: int) -> tuple[str, int]: ...
def addr_bytes(addrs: Buffer, i: int) -> bytes: ...
def recv_batch(
    fd: int,
    buf: Buffer,
    stride: int,
    lengths: Buffer,
    addrs: Buffer | None = ...,
    max_count: int = ...,
) -> int: ...
def send_batch(
    fd: int,
    buf: Buffer,
    stride: int,
    lengths: Buffer,
    offsets: Buffer | None,
    dests: Buffer | None,
    count: int,
    start: int = ...,
) -> int: ...
def send_batch_indexed(
    fd: int,
    buf: Buffer,
    stride: int,
    lengths: Buffer,
    offsets: Buffer | None,
    dests: Buffer | None,
    order: Buffer,
    count: int,
    start: int = ...,
) -> int: ...
