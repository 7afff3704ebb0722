"""Key files and the keygen / pubkey commands."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from scion_appliance.cli import main
from scion_appliance.errors import OperatorError
from scion_appliance.tunnel import keys

# RFC 7748 section 6.1: Alice's private key and public key.
RFC_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RFC_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def test_public_key_known_answer() -> None:
    assert keys.public_key(RFC_PRIVATE) == RFC_PUBLIC


def test_generated_keys_are_clamped_and_distinct() -> None:
    a, b = keys.generate_private_key(), keys.generate_private_key()
    assert a != b
    assert a[0] & 7 == 0 and a[31] & 128 == 0 and a[31] & 64


def test_write_then_load(tmp_path: Path) -> None:
    f = tmp_path / "private.key"
    keys.write_private_key(f, RFC_PRIVATE)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert f.read_text() == base64.b64encode(RFC_PRIVATE).decode() + "\n"
    assert keys.load_private_key(f) == RFC_PRIVATE
    assert [p.name for p in tmp_path.iterdir()] == ["private.key"]  # no temporary left behind


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    f = tmp_path / "k"
    keys.write_private_key(f, RFC_PRIVATE)
    with pytest.raises(OperatorError, match="--force"):
        keys.write_private_key(f, bytes(32))
    assert keys.load_private_key(f) == RFC_PRIVATE
    keys.write_private_key(f, bytes(range(32)), force=True)
    assert keys.load_private_key(f) == bytes(range(32))
    assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_write_ignores_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        keys.write_private_key(tmp_path / "k", RFC_PRIVATE)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_write_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(OperatorError, match="does not exist"):
        keys.write_private_key(tmp_path / "nope" / "k", RFC_PRIVATE)


@pytest.mark.parametrize(
    ("content", "mode", "match"),
    [
        (base64.b64encode(RFC_PRIVATE) + b"\n", 0o644, r"chmod 600 .*/k"),
        (base64.b64encode(RFC_PRIVATE), 0o640, "group or others"),
        (b"not base64 at all!\n", 0o600, "not base64"),
        (base64.b64encode(bytes(31)), 0o600, "31 bytes"),
        (b"\xff\xfe", 0o600, "not text"),
        (b"", 0o600, "0 bytes"),
    ],
)
def test_load_refuses(tmp_path: Path, content: bytes, mode: int, match: str) -> None:
    f = tmp_path / "k"
    f.write_bytes(content)
    f.chmod(mode)
    with pytest.raises(OperatorError, match=match) as err:
        keys.load_private_key(f)
    assert str(f) in str(err.value)


def test_load_missing_and_symlink(tmp_path: Path) -> None:
    with pytest.raises(OperatorError, match="keygen --out"):
        keys.load_private_key(tmp_path / "missing")
    real = tmp_path / "real"
    keys.write_private_key(real, RFC_PRIVATE)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OperatorError, match="symbolic link"):
        keys.load_private_key(tmp_path / "link")
    with pytest.raises(OperatorError, match="not a regular file"):
        keys.load_private_key(tmp_path)


def test_preshared_key(tmp_path: Path) -> None:
    f = tmp_path / "psk"
    f.write_text(base64.b64encode(b"p" * 32).decode() + "\n")
    f.chmod(0o600)
    assert keys.load_preshared_key(f) == b"p" * 32
    f.chmod(0o644)
    with pytest.raises(OperatorError, match="pre-shared key file"):
        keys.load_preshared_key(f)


def test_cli_keygen_and_pubkey(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "appliance.key"
    assert main(["keygen", "--out", str(f)]) == 0
    printed = capsys.readouterr().out.strip()
    private = keys.load_private_key(f)
    assert printed == base64.b64encode(keys.public_key(private)).decode()
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert main(["pubkey", str(f)]) == 0
    assert capsys.readouterr().out.strip() == printed
    # a second keygen to the same file refuses, naming the file and the way out
    assert main(["keygen", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and "--force" in err
    assert keys.load_private_key(f) == private
    assert main(["keygen", "--out", str(f), "--force"]) == 0
    assert capsys.readouterr().out.strip() != printed


def test_cli_pubkey_errors_and_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "k"
    f.write_text(base64.b64encode(RFC_PRIVATE).decode())
    f.chmod(0o644)
    assert main(["pubkey", str(f)]) == 2
    assert "chmod 600" in capsys.readouterr().err
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(base64.b64encode(RFC_PRIVATE).decode() + "\n"))
    assert main(["pubkey", "-"]) == 0
    assert capsys.readouterr().out.strip() == base64.b64encode(RFC_PUBLIC).decode()
    assert main(["keygen", "--out", "-"]) == 0
    assert len(keys.decode_key(capsys.readouterr().out)) == 32
