"""``scion-appliance decode``: SCION packets to JSON, one object per line, like tshark for SCION."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scion_appliance.errors import OperatorError

HELP = "decode SCION packets (raw, hex or pcap) and print one JSON object per packet"


def add_arguments(p: argparse.ArgumentParser) -> None:
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--hex", action="store_true", help="FILE holds hex text, one packet per line")
    fmt.add_argument("--pcap", action="store_true", help="FILE is a pcap capture; UDP payloads are decoded")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.add_argument("file", metavar="FILE", help="input file; '-' reads standard input (raw, one packet)")


def _packets(args: argparse.Namespace, blob: bytes) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    if args.pcap:
        from scion_appliance.pcap import PcapError, read_udp_frames

        try:
            for f in read_udp_frames(blob):
                meta: dict[str, Any] = {"index": f.index, "timestamp": round(f.timestamp, 9)}
                if f.payload is None:
                    meta["skipped"] = f.skipped
                else:
                    meta["underlay"] = (
                        {"src": f"{f.src[0]}:{f.src[1]}", "dst": f"{f.dst[0]}:{f.dst[1]}"}
                        if (f.src and f.dst)
                        else None
                    )
                yield meta, f.payload
        except PcapError as e:
            raise OperatorError(f"{args.file}: {e}") from None
    elif args.hex:
        text = blob.decode("ascii", "replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            digits = "".join(line.split("#", 1)[0].split())
            if not digits:
                continue
            try:
                yield {"index": lineno - 1, "line": lineno}, bytes.fromhex(digits)
            except ValueError:
                raise OperatorError(f"{args.file}, line {lineno}: not hex digits") from None
    else:
        yield {"index": 0}, blob


def decode_one(data: bytes) -> dict[str, Any]:
    from scion_appliance._fast import codec
    from scion_appliance.scion.errors import ScionParseError
    from scion_appliance.scion.packet import from_record, record

    try:
        rec = record(data)
        pkt = from_record(data, rec)
    except ScionParseError as e:
        return {"length": len(data), "error": {"reason": e.reason, "offset": e.offset, "message": str(e)}}
    out: dict[str, Any] = {"length": len(data), **pkt.to_json()}
    if rec["l4_proto"] in (17, 202):
        out["l4"]["checksum_valid"] = codec.l4_checksum(data, False) == 0
    return out


def run(args: argparse.Namespace) -> int:
    try:
        blob = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as e:
        raise OperatorError(f"cannot read {args.file}: {e.strerror}") from None
    errors = 0
    for meta, data in _packets(args, blob):
        obj = dict(meta)
        if data is not None:
            obj.update(decode_one(data))
            errors += "error" in obj
        print(json.dumps(obj, indent=2 if args.pretty else None))
    return 1 if errors else 0
