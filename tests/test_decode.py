"""``scion-appliance decode`` and the pcap reader under it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from scion_appliance.cli import main
from scion_appliance.pcap import PcapError, read_udp_frames

DATA = Path(__file__).parent / "data"
PCAP = DATA / "router-trace" / "reference_pkts.pcap"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict]]:
    code = main(["decode", *args])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines()]


def test_raw_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, objs = run(capsys, str(DATA / "scionproto-golden" / "scion-udp.bin"))
    assert code == 0 and len(objs) == 1
    o = objs[0]
    assert (o["src_isd_as"], o["dst_isd_as"], o["src_host"], o["dst_host"]) == (
        "2-ff00:0:222",
        "1-ff00:0:111",
        "10.0.0.100",
        "2001:db8::68",
    )
    assert o["path"]["meta"] == {"curr_inf": 0, "curr_hf": 0, "seg_len": [2, 2, 0]}
    assert o["path"]["hop_fields"][0]["mac"] == "010203040506"
    assert o["l4"].items() >= {"proto": "UDP", "src_port": 1280, "dst_port": 80, "checksum": 0xB7D2}.items()
    assert o["l4"]["checksum_valid"] is True


def test_pcap_decodes_every_frame(capsys: pytest.CaptureFixture[str]) -> None:
    code, objs = run(capsys, "--pcap", str(PCAP))
    assert code == 0 and len(objs) == 13
    assert [o["path"]["meta"]["curr_hf"] for o in objs] == [0, 1, 1, 2, 3, 4, 4, 5, 6, 7, 7, 8, 8]
    assert all(o["underlay"]["src"].startswith("127.0.0.") for o in objs)


def test_hex_lines_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = (DATA / "scionproto-golden" / "scion-bfd.bin").read_bytes().hex()
    f = tmp_path / "pkts.hex"
    f.write_text(f"# two packets\n{good}\n{good[:40]}\n")
    code, objs = run(capsys, "--hex", str(f))
    assert code == 1
    assert objs[0]["l4"]["proto"] == "BFD"
    assert objs[1]["error"]["reason"] == "truncated_header"
    assert objs[1]["error"]["offset"] == 20


def test_operator_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(tmp_path / "missing")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(40))
    assert main(["decode", "--pcap", str(bad)]) == 2
    assert "editcap" in capsys.readouterr().err


def test_pcap_reader_skips_non_udp_with_a_reason() -> None:
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    blob = hdr + struct.pack("<IIII", 1, 0, len(arp), len(arp)) + arp
    (frame,) = read_udp_frames(blob)
    assert frame.payload is None and frame.skipped == "ethertype 0x0806 is not IP"
    with pytest.raises(PcapError, match="cut short"):
        list(read_udp_frames(blob[:-5]))
