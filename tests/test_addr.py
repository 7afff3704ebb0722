"""ISD-AS and host addresses. Known answers: scionproto's addr package text forms (e.g. "1-ff00:0:110",
BGP-style decimal ASes up to 2^32-1, hex above) and its SVC values (DS 0x0001, CS 0x0002)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scion_appliance.scion.addr import (
    IA,
    SVC,
    AddressError,
    format_as,
    host_from_bytes,
    host_to_bytes,
    parse_host,
)


@pytest.mark.parametrize(
    ("text", "isd", "asn"),
    [
        ("1-ff00:0:110", 1, 0xFF00_0000_0110),
        ("2-64512", 2, 64512),
        ("65535-4294967295", 65535, 0xFFFF_FFFF),
        ("0-0", 0, 0),
        ("1-ffff:ffff:ffff", 1, (1 << 48) - 1),
        ("1-1:0:0", 1, 1 << 32),
    ],
)
def test_parse_and_format(text: str, isd: int, asn: int) -> None:
    ia = IA.parse(text)
    assert (ia.isd, ia.asn) == (isd, asn)
    assert str(ia) == text
    assert IA.from_bytes(ia.to_bytes()) == ia
    assert IA.from_int(int(ia)) == ia


def test_small_as_numbers_written_in_hex_format_as_decimal() -> None:
    assert str(IA.parse("1-0:0:fe")) == "1-254"
    assert format_as(0x1_0000_0000) == "1:0:0"


@pytest.mark.parametrize(
    "text",
    [
        "1",
        "1-",
        "-1",
        "65536-1",
        "1-4294967296",
        "1-ff00:0",
        "1-ff00:0:0:1",
        "1-fffff:0:0",
        "1-g:0:0",
        "a-1",
        "1--1",
        "1-1:0:",
        "1-\u0661",
    ],
)
def test_bad_text_is_refused(text: str) -> None:
    with pytest.raises(AddressError):
        IA.parse(text)


def test_binary_form_is_big_endian_isd_then_as() -> None:
    assert IA.parse("1-ff00:0:110").to_bytes() == bytes.fromhex("0001ff0000000110")


@given(st.integers(0, 0xFFFF), st.integers(0, (1 << 48) - 1))
def test_text_round_trip(isd: int, asn: int) -> None:
    ia = IA(isd, asn)
    assert IA.parse(str(ia)) == ia


def test_hosts() -> None:
    for h in (ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("2001:db8::1"), SVC(0x0002)):
        t, raw = host_to_bytes(h)
        assert host_from_bytes(t, raw) == h
    assert host_to_bytes(SVC(0x0002)) == (0x4, b"\x00\x02\x00\x00")
    assert str(SVC(0x0002)) == "CS_A" and str(SVC(0x8001)) == "DS_M"
    assert parse_host("CS") == SVC(2) and parse_host("DS_M") == SVC(0x8001)
    assert parse_host("192.0.2.1") == ipaddress.ip_address("192.0.2.1")
    with pytest.raises(AddressError):
        host_from_bytes(0x1, b"\x00" * 4)
    with pytest.raises(AddressError):
        parse_host("nonsense")
