"""Build of the native hot path: every ``scion_appliance/_fast/*.pyx`` becomes an extension module.

Rules kept here:
- libsodium (and OpenSSL's libcrypto, for AES) are found with pkg-config; a missing one stops the build
  with one line naming the Debian package that provides it.
- A ``.pyx`` names the C files it compiles in and any extra libraries itself, with Cython's
  ``# distutils: sources = csrc/x.c`` and ``# distutils: libraries = crypto`` header lines.
- ``SCION_FAST_MODULES=replay,aead`` builds only those modules (quicker iteration on one module).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).parent
FAST = ROOT / "scion_appliance" / "_fast"

# Every extension may use these; each is checked up front so a missing one is reported clearly.
SYSTEM_LIBS = ["libsodium", "libcrypto"]

# pkg-config name -> (header that proves it is installed, Debian package to install)
KNOWN = {
    "libsodium": ("sodium.h", "libsodium-dev"),
    "libcrypto": ("openssl/evp.h", "libssl-dev"),
}


def fail(line: str) -> None:
    sys.stderr.write(f"error: {line}\n")
    raise SystemExit(1)


def pkg_config(name: str) -> tuple[list[str], list[str], list[str]]:
    header, debian = KNOWN[name]
    if shutil.which("pkg-config") is None:
        fail("pkg-config is not installed: run `apt-get install pkg-config` (or scripts/bootstrap)")
    try:
        cflags = subprocess.run(["pkg-config", "--cflags", name], check=True, capture_output=True, text=True)
        libs = subprocess.run(["pkg-config", "--libs", name], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError:
        fail(f"{name} development files not found by pkg-config: run `apt-get install {debian}`")
    incs = [f[2:] for f in cflags.stdout.split() if f.startswith("-I")]
    search = incs + ["/usr/include", "/usr/local/include"]
    if not any((Path(d) / header).exists() for d in search):
        fail(f"header <{header}> not found: run `apt-get install {debian}`")
    lib_dirs = [f[2:] for f in libs.stdout.split() if f.startswith("-L")]
    lib_names = [f[2:] for f in libs.stdout.split() if f.startswith("-l")]
    return incs, lib_dirs, lib_names


def extensions() -> list[Extension]:
    only = {m for m in os.environ.get("SCION_FAST_MODULES", "").split(",") if m}
    incs, lib_dirs = ["csrc"], []
    for lib in SYSTEM_LIBS:
        i, d, _ = pkg_config(lib)
        incs += i
        lib_dirs += d
    exts = []
    for pyx in sorted(FAST.glob("*.pyx")):
        mod = pyx.stem
        if only and mod not in only:
            continue
        exts.append(
            Extension(
                f"scion_appliance._fast.{mod}",
                [str(pyx.relative_to(ROOT))],
                include_dirs=incs,
                library_dirs=lib_dirs,
                libraries=["sodium"],
                # Portable baseline; C that wants AES-NI or SSE selects it per function at run time.
                extra_compile_args=["-O3", "-fno-strict-aliasing"],
            )
        )
    return exts


def cythonized() -> list[Extension]:
    exts = extensions()
    if not exts:
        return []
    from Cython.Build import cythonize

    return cythonize(
        exts,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        quiet=True,
    )


setup(ext_modules=cythonized())
