"""``scion-appliance keygen``: make the appliance's static X25519 key pair (``wg genkey | wg pubkey``)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "make a static X25519 key pair: write the private key file (mode 0600) and print the public key"

DEFAULT_KEY_FILE = Path("/etc/scion-appliance/private.key")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        metavar="FILE",
        default=str(DEFAULT_KEY_FILE),
        help=f"where to write the private key (default {DEFAULT_KEY_FILE}); '-' prints it on stdout instead",
    )
    p.add_argument("--force", action="store_true", help="replace an existing key file (its identity is lost)")


def run(args: argparse.Namespace) -> int:
    from scion_appliance.tunnel import keys

    private = keys.generate_private_key()
    if args.out == "-":
        print(keys.encode_key(private))  # the public key then comes from `scion-appliance pubkey -`
        return 0
    keys.write_private_key(args.out, private, force=args.force)
    print(keys.encode_key(keys.public_key(private)))
    return 0
