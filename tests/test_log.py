"""JSON-lines logs: shape of a line, levels, and that key material never reaches the output."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scion_appliance import log


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    handler = log.configure("debug", buf)
    yield buf
    logging.getLogger().removeHandler(handler)


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_line_has_timestamp_level_component_event_and_fields(out: io.StringIO) -> None:
    log.get_logger("tunnel").info("handshake.complete", peer="branch-a", rtt_ms=3.5, paths=[1, 2])
    (doc,) = lines(out)
    assert list(doc)[:4] == ["ts", "level", "component", "event"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(doc["ts"]))
    assert doc["level"] == "info"
    assert doc["component"] == "tunnel"
    assert doc["event"] == "handshake.complete"
    assert doc["peer"] == "branch-a" and doc["rtt_ms"] == 3.5 and doc["paths"] == [1, 2]


def test_one_line_per_event_even_with_newlines_in_values(out: io.StringIO) -> None:
    logger = log.get_logger("x")
    logger.warning("a", text="line1\nline2")
    logger.error("b")
    docs = lines(out)
    assert [d["event"] for d in docs] == ["a", "b"]
    assert docs[0]["text"] == "line1\nline2"


def test_level_threshold() -> None:
    buf = io.StringIO()
    handler = log.configure("warning", buf)
    try:
        logger = log.get_logger("x")
        logger.info("hidden")
        logger.debug("hidden")
        logger.warning("shown")
        assert [d["event"] for d in lines(buf)] == ["shown"]
    finally:
        logging.getLogger().removeHandler(handler)


def test_reconfigure_replaces_handler_instead_of_duplicating() -> None:
    first = io.StringIO()
    second = io.StringIO()
    log.configure("info", first)
    handler = log.configure("info", second)
    try:
        log.get_logger("x").info("once")
        assert first.getvalue() == ""
        assert len(lines(second)) == 1
    finally:
        logging.getLogger().removeHandler(handler)


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        log.parse_level("loud")


def test_reserved_names_do_not_shadow_the_fixed_fields(out: io.StringIO) -> None:
    log.get_logger("x").info("real", event="fake", level="fake")
    (doc,) = lines(out)
    assert doc["event"] == "real" and doc["level"] == "info"
    assert doc["field_event"] == "fake" and doc["field_level"] == "fake"


def test_key_material_is_redacted(out: io.StringIO) -> None:
    secret = "c2VjcmV0LWtleS1tYXRlcmlhbC1kby1ub3QtbG9nIQ=="
    log.get_logger("tunnel").info(
        "peer.loaded",
        private_key=secret,
        psk=secret,
        preshared_key_file="/etc/x",  # the name says key: redacted even if it is only a path
        client_secret=secret,
        SessionKey=secret,
        nested={"send_key": secret, "ok": 1},
        public_key="AAAA",
        peer="branch-a",
    )
    text = out.getvalue()
    assert secret not in text
    (doc,) = lines(out)
    for name in ("private_key", "psk", "preshared_key_file", "client_secret", "SessionKey"):
        assert doc[name] == log.REDACTED, name
    assert doc["nested"] == {"send_key": log.REDACTED, "ok": 1}
    assert doc["public_key"] == "AAAA"  # identifies a peer; not key material
    assert doc["peer"] == "branch-a"


def test_raw_bytes_are_never_printed_whatever_the_name(out: io.StringIO) -> None:
    material = bytes(range(32))
    log.get_logger("tunnel").info("oops", k=material, blobs=[bytearray(b"\x01" * 16)])
    (doc,) = lines(out)
    assert doc["k"] == "<32 bytes>"
    assert doc["blobs"] == ["<16 bytes>"]
    assert material.hex() not in out.getvalue()


def test_stdlib_records_from_other_libraries_are_formatted_and_redacted(out: io.StringIO) -> None:
    logging.getLogger("hypercorn.error").warning("bad %(psk)s here", {"psk": "hunter2"})
    (doc,) = lines(out)
    assert doc["component"] == "hypercorn.error"
    assert doc["event"] == "bad [redacted] here"
    assert "hunter2" not in out.getvalue()


def test_exception_traceback_included(out: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.get_logger("svc").exception("task.failed", task="probe")
    (doc,) = lines(out)
    assert doc["level"] == "error" and "RuntimeError: boom" in str(doc["exc"])


def test_unserialisable_values_do_not_raise(out: io.StringIO) -> None:
    class Thing:
        def __str__(self) -> str:
            return "thing"

    log.get_logger("x").info("e", obj=Thing())
    assert lines(out)[0]["obj"] == "thing"


@given(name=st.text(min_size=1, max_size=20), value=st.text(min_size=8, max_size=40))
def test_any_name_containing_a_secret_word_is_redacted(name: str, value: str) -> None:
    for word in ("key", "Secret", "PSK"):
        field = name + word
        if "public" in field.lower():
            continue
        assert log.redact(value, field) == log.REDACTED
