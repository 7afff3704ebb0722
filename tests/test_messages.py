"""Tunnel message layouts: sizes equal WireGuard's, round trips, and no crash on any malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance.tunnel import messages as m
from scion_appliance.tunnel.messages import MessageDrop, MessageError, MessageType


def _initiation() -> m.Initiation:
    return m.Initiation(0x11223344, b"e" * 32, b"s" * 48, b"t" * 28, b"1" * 16, b"2" * 16)


def test_sizes_match_wireguard() -> None:
    # WireGuard's whitepaper section 5.4: initiation 148, response 92, cookie reply 64, data header 16.
    assert (m.INITIATION_LEN, m.RESPONSE_LEN, m.COOKIE_REPLY_LEN, m.DATA_HEADER_LEN) == (148, 92, 64, 16)


def test_initiation_layout_and_round_trip() -> None:
    msg = _initiation()
    raw = msg.encode()
    assert raw[:8] == bytes([1, 0, 0, 0, 0x44, 0x33, 0x22, 0x11])  # type, reserved, little-endian index
    assert raw[m.INITIATION_NOISE] == msg.noise_message
    assert raw[m.mac1_offset(len(raw)) : m.mac2_offset(len(raw))] == b"1" * 16
    assert raw[-16:] == b"2" * 16
    assert m.parse_initiation(raw) == msg
    assert m.Initiation.from_noise(msg.sender, msg.noise_message).encode()[:-32] == raw[:-32]


def test_response_and_cookie_reply_round_trip() -> None:
    r = m.Response(7, 9, b"e" * 32, b"n" * 16, b"1" * 16, b"2" * 16)
    raw = r.encode()
    assert raw[:12] == bytes([2, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0])
    assert m.parse_response(raw) == r
    c = m.CookieReply(5, b"n" * 24, b"c" * 32)
    assert m.parse_cookie_reply(c.encode()) == c


def test_data_header() -> None:
    raw = m.encode_data_header(0xAABBCCDD, 0x0102030405060708)
    # type 4, reserved, receiver index LE, counter LE (DESIGN.md's sealed envelope)
    assert raw == bytes.fromhex("04000000ddccbbaa0807060504030201")
    packet = raw + b"\x00" * 16
    assert m.parse_data_header(packet) == m.DataHeader(0xAABBCCDD, 0x0102030405060708)
    with pytest.raises(MessageError) as err:
        m.parse_data_header(raw + b"\x00" * 15)
    assert err.value.reason is MessageDrop.LENGTH


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", MessageDrop.EMPTY),
        (b"\x01\x00", MessageDrop.LENGTH),
        (b"\x09\x00\x00\x00" + bytes(200), MessageDrop.UNKNOWN_TYPE),
        (b"\x00\x00\x00\x00" + bytes(200), MessageDrop.UNKNOWN_TYPE),
        (b"\x01\x00\x01\x00" + bytes(144), MessageDrop.RESERVED),
        (b"\x01\x00\x00\x00" + bytes(145), MessageDrop.LENGTH),
        (b"\x02\x00\x00\x00" + bytes(87), MessageDrop.LENGTH),
        (b"\x03\x00\x00\x00" + bytes(61), MessageDrop.LENGTH),
    ],
)
def test_malformed_reasons(data: bytes, reason: MessageDrop) -> None:
    with pytest.raises(MessageError) as err:
        m.message_type(data)
    assert err.value.reason is reason


def test_parser_refuses_other_type() -> None:
    raw = _initiation().encode()
    with pytest.raises(MessageError):
        m.parse_response(raw)
    assert m.message_type(raw) is MessageType.INITIATION


_PARSERS = [m.parse_initiation, m.parse_response, m.parse_cookie_reply, m.parse_data_header, m.message_type]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_message_error(data: bytes) -> None:
    for parse in _PARSERS:
        try:
            parse(data)
        except MessageError:
            pass


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([1, 2, 3]), st.integers(min_value=0, max_value=200), st.binary(min_size=200, max_size=200)
)
def test_truncations_and_extensions_of_valid_heads(kind: int, length: int, body: bytes) -> None:
    data = (bytes([kind, 0, 0, 0]) + body)[:length]
    exact = {1: 148, 2: 92, 3: 64}[kind]
    parse = {1: m.parse_initiation, 2: m.parse_response, 3: m.parse_cookie_reply}[kind]
    if length == exact:
        parse(data)
    else:
        with pytest.raises(MessageError):
            parse(data)


def test_data_header_agrees_with_the_aead_module() -> None:
    aead = pytest.importorskip("scion_appliance._fast.aead")
    sealed = aead.AeadKey(bytes(32)).seal(0xAABBCCDD, b"payload")
    assert sealed[: m.DATA_HEADER_LEN] == m.encode_data_header(0xAABBCCDD, 0)
    assert m.parse_data_header(sealed) == m.DataHeader(0xAABBCCDD, 0)
    assert (aead.HEADER_LEN, aead.TYPE_DATA) == (m.DATA_HEADER_LEN, MessageType.DATA)
