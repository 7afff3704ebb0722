"""``scion-appliance pubkey``: the public key of a private key file (like ``wg pubkey``)."""

from __future__ import annotations

import argparse
import sys

HELP = "print the public key (base64) of a private key file, or of a private key on stdin with '-'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the private key file, or '-' to read the key from stdin")


def run(args: argparse.Namespace) -> int:
    from scion_appliance.errors import OperatorError
    from scion_appliance.tunnel import keys

    if args.file == "-":
        try:
            private = keys.decode_key(sys.stdin.read())
        except ValueError as e:
            raise OperatorError(f"stdin: not one base64-encoded 32-byte private key ({e})") from None
    else:
        private = keys.load_private_key(args.file)
    print(keys.encode_key(keys.public_key(private)))
    return 0
