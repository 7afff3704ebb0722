"""Builds csrc/bench_limits.c (the raw-C limits) with the system C compiler and loads it with ctypes.

Compiled fresh on every bench run into a temporary directory, with the flags of the extension modules
(-O3), against the same libsodium and csrc/replay.h, so the limit and the module share everything but
the envelope and Python work.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def load() -> ctypes.CDLL:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("bench: no C compiler (cc) found to build the raw-C limit: apt-get install gcc")
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "libsodium"], check=True, capture_output=True, text=True
    ).stdout.split()
    out = Path(tempfile.mkdtemp(prefix="scion-bench-")) / "limits.so"
    subprocess.run(
        [
            cc,
            "-O3",
            "-fno-strict-aliasing",
            "-shared",
            "-fPIC",
            f"-I{ROOT / 'csrc'}",
            str(ROOT / "csrc" / "bench_limits.c"),
            "-o",
            str(out),
            *flags,
            "-lsodium",
        ],
        check=True,
    )
    lib = ctypes.CDLL(str(out))
    u64, size, p = ctypes.c_uint64, ctypes.c_size_t, ctypes.c_void_p
    lib.limit_init.restype = ctypes.c_int
    lib.limit_seal.restype = u64
    lib.limit_seal.argtypes = [p, p, size, size, size, size]
    lib.limit_open.restype = u64
    lib.limit_open.argtypes = [p, p, p, size, size, size, size]
    lib.limit_replay_check.restype = u64
    lib.limit_replay_check.argtypes = [u64, p, size, size, p, size, ctypes.POINTER(size)]
    if lib.limit_init() < 0:
        raise SystemExit("bench: sodium_init failed in the raw-C limit")
    shutil.rmtree(out.parent, ignore_errors=True)
    return lib


def address(buf: bytearray | memoryview) -> int:
    """The address of a writable buffer's first byte, for ctypes."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))
