"""SCION master-key files: reading, operator errors naming the file, hop-key derivation."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from scion_appliance.errors import OperatorError
from scion_appliance.scion.keys import load_master_keys, read_master_key, write_master_key

VECTORS = json.loads((Path(__file__).parent / "data" / "mac-vectors.json").read_text())


def test_reads_scion_master_key_and_derives_hop_key(tmp_path: Path) -> None:
    vec = VECTORS["key_derivation"][1]
    (tmp_path / "master0.key").write_text(vec["master_b64"] + "\n")
    keys = load_master_keys(tmp_path)
    assert keys.key0 == base64.b64decode(vec["master_b64"])
    assert keys.key1 is None
    assert keys.hop_key.hex() == vec["hop_field_key_hex"]  # known answer: mac-vectors.json
    assert vec["master_b64"] not in repr(keys)


def test_write_then_read_roundtrip(tmp_path: Path) -> None:
    key = write_master_key(tmp_path / "master0.key")
    write_master_key(tmp_path / "master1.key", b"k" * 16)
    assert (tmp_path / "master0.key").stat().st_mode & 0o777 == 0o600
    keys = load_master_keys(tmp_path)
    assert keys.key0 == key and keys.key1 == b"k" * 16


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"", "empty"), (b"not base64!!", "base64"), (base64.b64encode(b"short") + b"\n", "5 bytes")],
)
def test_bad_files_name_the_file(tmp_path: Path, content: bytes, words: str) -> None:
    p = tmp_path / "master0.key"
    p.write_bytes(content)
    with pytest.raises(OperatorError) as e:
        read_master_key(p)
    assert str(p) in str(e.value) and words in str(e.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(OperatorError, match=r"master0\.key"):
        load_master_keys(tmp_path)
    with pytest.raises(OperatorError, match="nowhere"):
        load_master_keys(tmp_path / "nowhere")
