import socket

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

SOL_UDP: int
UDP_SEGMENT: int
UDP_GRO: int
GSO_MAX_SEGS: int

def enable_gro(sock: socket.socket) -> bool: ...

class GroReader:
    @property
    def pending(self) -> bool: ...
    def recv_batch(
        self, fd: int, buf: Buffer, stride: int, lengths: Buffer, addrs: Buffer | None = ..., max_count: int = ...
    ) -> int: ...

def send_batch_gso(
    fd: int, buf: Buffer, stride: int, lengths: Buffer, offsets: Buffer | None, dest: Buffer | None, count: int,
    start: int = ...,
) -> tuple[int, bool]: ...
