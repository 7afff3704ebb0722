from collections.abc import Iterable

from typing_extensions import Buffer

def read_batch(fd: int, buf: Buffer, stride: int, lengths: Buffer, max_count: int = ...) -> int: ...
def write_batch(
    fd: int, buf: Buffer, stride: int, lengths: Buffer, offsets: Buffer | None, count: int, start: int = ...,
    vnet: bool = ...,
) -> int: ...
def write_batch_indexed(
    fd: int,
    buf: Buffer,
    stride: int,
    lengths: Buffer,
    offsets: Buffer | None,
    order: Buffer,
    count: int,
    start: int = ...,
) -> int: ...

VNET_HDR_LEN: int

class TunReader:
    dropped: int
    @property
    def pending(self) -> bool: ...
    def read_batch(self, fd: int, buf: Buffer, stride: int, lengths: Buffer, max_count: int = ...) -> int: ...

def split(packet: Buffer, stride: int = ..., max_count: int = ...) -> list[bytes]: ...
def write_vnet(fd: int, packets: Iterable[Buffer], udp_segs: int = ...) -> tuple[int, int, int, int]: ...
