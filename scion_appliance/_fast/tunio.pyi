from typing_extensions import Buffer

def read_batch(fd: int, buf: Buffer, stride: int, lengths: Buffer, max_count: int = ...) -> int: ...
def write_batch(
    fd: int, buf: Buffer, stride: int, lengths: Buffer, offsets: Buffer | None, count: int, start: int = ...
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
