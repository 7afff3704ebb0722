"""The TOML config: the shipped example validates; every error names file, key, expectation and finding."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scion_appliance import cli, config
from scion_appliance.config import ConfigError
from scion_appliance.errors import OperatorError
from scion_appliance.scion.addr import IA

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "packaging" / "appliance.example.toml"
KEY_A = "4TGM1B3erwcXCs68DRQy5lfbjCrt/kJ7FVFKRlF6Iws="
KEY_B = "BZBSQwYIs4LLjGLW0HBSW38Z2d6M00cxc9Ubx5AsEEY="

MINIMAL = """
[identity]
private_key_file = "private.key"
isd_as = "1-ff00:0:110"
"""


def err(text: str, source: str = "/etc/scion-appliance/appliance.toml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.parse(text, source)
    assert isinstance(info.value, OperatorError)
    return info.value


def peer(**fields: str) -> str:
    base = {"name": '"a"', "isd_as": '"1-ff00:0:111"', "public_key": f'"{KEY_A}"'}
    base.update(fields)
    return "\n[[peers]]\n" + "".join(f"{k} = {v}\n" for k, v in base.items())


# -- the shipped example ----------------------------------------------------------------------------


def test_example_config_validates_with_every_section() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.source == EXAMPLE
    assert cfg.identity.isd_as == IA.parse("1-ff00:0:110")
    assert [p.name for p in cfg.peers] == ["branch-a", "datacenter"]
    a = cfg.peer("branch-a")
    assert a.public_key == __import__("base64").b64decode(KEY_A)
    assert a.remote_prefixes == (ipaddress.ip_network("10.2.0.0/16"), ipaddress.ip_network("2001:db8:2::/48"))
    assert a.address == (ipaddress.ip_address("10.0.0.2"), 30057)
    assert a.preshared_key_file == Path("/etc/scion-appliance/branch-a.psk")
    assert cfg.control.mode == 0o660 and cfg.control.group == "scion-appliance"
    assert cfg.telemetry.otlp_endpoint is None
    assert cfg.router is not None and cfg.router.topology == Path("/etc/scion/topology.json")
    assert cfg.tun is not None and cfg.tun.address == ipaddress.ip_interface("10.1.0.1/24")
    assert cfg.tun.netns is None  # "" in the example: the service's own namespace
    assert cfg.tun.txqueuelen == 1000
    assert cfg.replay.window_size == 8192


def test_example_sets_every_key_of_the_schema() -> None:
    # The example is the documentation: a key missing from it is a key no operator learns about.
    text = EXAMPLE.read_text()
    for cls in (
        config.Identity,
        config.State,
        config.Control,
        config.Telemetry,
        config.Logging,
        config.Underlay,
        config.Router,
        config.Peer,
        config.Tun,
        config.Paths,
        config.Replay,
    ):
        for f in config.fields(cls):
            assert f"\n{f.name} = " in text, f"{cls.__name__}.{f.name} is not in the example"


def test_check_config_command_prints_one_line_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "ok: 1-ff00:0:110, 2 peer(s)" in out


def test_check_config_command_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + peer(public_key='"nope"'))
    assert cli.main(["check-config", str(bad)]) == 2
    errline = capsys.readouterr().err
    assert errline.startswith(f"scion-appliance check-config: {bad}: peers[0].public_key: expected 32 bytes")
    assert "found 'nope'" in errline


# -- defaults ------------------------------------------------------------------------------------------


def test_minimal_config_gets_the_documented_defaults() -> None:
    cfg = config.parse(MINIMAL, "/etc/scion-appliance/appliance.toml")
    assert cfg.identity.private_key_file == Path("/etc/scion-appliance/private.key")  # relative to the file
    assert cfg.state.dir == Path("/var/lib/scion-appliance")
    assert cfg.control.socket == Path("/run/scion-appliance/control.sock") and cfg.control.mode == 0o660
    assert cfg.underlay.port == 30057 and cfg.underlay.sig_port == 30056
    assert cfg.underlay.listen_address == ipaddress.ip_address("0.0.0.0")
    assert cfg.paths.probe_interval_ms == 100
    assert cfg.replay.window_size == 8192
    assert cfg.router is None and cfg.tun is None and cfg.peers == ()
    assert cfg.logging.level == "info" and cfg.telemetry.service_name == "scion-appliance"


def test_mode_accepts_toml_octal_and_string() -> None:
    assert config.parse(MINIMAL + "[control]\nmode = 0o640\n").control.mode == 0o640
    assert config.parse(MINIMAL + '[control]\nmode = "0600"\n').control.mode == 0o600
    e = err(MINIMAL + '[control]\nmode = "rw-rw----"\n')
    assert e.key == "control.mode"


def test_seed_window_size_1024_works() -> None:
    assert config.parse(MINIMAL + "[replay]\nwindow_size = 1024\n").replay.window_size == 1024


# -- errors: file, dotted key, expected, found -----------------------------------------------------------


def test_error_message_shape() -> None:
    e = err(MINIMAL + peer() + peer(name='"b"', public_key='"QUJD"'))
    assert e.file == "/etc/scion-appliance/appliance.toml"
    assert e.key == "peers[1].public_key"
    assert "32 bytes in base64" in e.expected
    assert e.found == "'QUJD' (3 bytes after decoding)"
    assert str(e) == f"{e.file}: peers[1].public_key: expected {e.expected}, found {e.found}"


@pytest.mark.parametrize(
    ("extra", "key", "found_part"),
    [
        ('[paths]\nprobe_interval_ms = "fast"\n', "paths.probe_interval_ms", "'fast' (string)"),
        ("[paths]\nprobe_interval_ms = 5\n", "paths.probe_interval_ms", "5 (out of range)"),
        ("[paths]\nfailover_loss_threshold = 1.5\n", "paths.failover_loss_threshold", "out of range"),
        ("[paths]\nfailover_rtt_threshold = 0.5\n", "paths.failover_rtt_threshold", "out of range"),
        ("[paths]\nexploration_probability = true\n", "paths.exploration_probability", "True (boolean)"),
        ("[paths]\nmin_paths = 0\n", "paths.min_paths", "0 (out of range)"),
        ('[paths]\nexcluded_ases = ["1-ff00:0:1", "x"]\n', "paths.excluded_ases", "item [1] 'x'"),
        ('[paths]\nselect = "random"\n', "paths.select", "'random'"),
        ("[replay]\nwindow_size = 100\n", "replay.window_size", "100"),
        ("[replay]\nwindow_size = 32\n", "replay.window_size", "32 (out of range)"),
        ('[logging]\nlevel = "loud"\n', "logging.level", "'loud'"),
        ("[underlay]\nport = 70000\n", "underlay.port", "70000 (out of range)"),
        ('[underlay]\nlisten_address = "localhost"\n', "underlay.listen_address", "'localhost'"),
        ('[tun]\naddress = "10.1.0.1"\n', "tun.address", "no /prefix length"),
        ('[tun]\nname = "a-name-that-is-too-long"\n', "tun.name", "'a-name-that-is-too-long'"),
        ('[tun]\naddress = "2001:db8::1/64"\nmtu = 1000\n', "tun.mtu", "1000"),
        ('[tun]\nnetns = "../etc"\n', "tun.netns", "'../etc'"),
        ("[tun]\ntxqueuelen = 0\n", "tun.txqueuelen", "0"),
        ('[telemetry]\notlp_endpoint = "collector:4318"\n', "telemetry.otlp_endpoint", "'collector:4318'"),
        ("[telemetry]\nexport_interval_s = 0\n", "telemetry.export_interval_s", "0 (out of range)"),
        ('[router]\ntopology = "t.json"\n', "router.keys_dir", "nothing (this key is required)"),
        ("[control]\nsocket = 5\n", "control.socket", "5 (integer)"),
    ],
)
def test_bad_values_name_the_key(extra: str, key: str, found_part: str) -> None:
    e = err(MINIMAL + extra)
    assert e.key == key
    assert found_part in e.found
    assert e.expected


@pytest.mark.parametrize(
    ("fields", "key", "found_part"),
    [
        ({"isd_as": '"1-ff00:0:1:2"'}, "peers[0].isd_as", "hex form needs three groups"),
        ({"isd_as": '"70000-1"'}, "peers[0].isd_as", "ISD 70000 is out of range"),
        ({"isd_as": '"1-ff00:0:110"'}, "peers[0].isd_as", "1-ff00:0:110"),  # our own AS
        ({"name": '"has space"'}, "peers[0].name", "'has space'"),
        ({"public_key": '"!!!"'}, "peers[0].public_key", "not base64"),
        ({"remote_prefixes": '["10.2.0.1/16"]'}, "peers[0].remote_prefixes", "host bits set"),
        ({"remote_prefixes": '"10.2.0.0/16"'}, "peers[0].remote_prefixes", "(string)"),
        ({"address": '"10.0.0.2:99999"'}, "peers[0].address", "port out of range"),
        ({"address": '"host.example:1"'}, "peers[0].address", "host.example"),
    ],
)
def test_bad_peer_values(fields: dict[str, str], key: str, found_part: str) -> None:
    e = err(MINIMAL + peer(**fields))
    assert e.key == key
    assert found_part in e.found


def test_peer_address_forms() -> None:
    p = config.parse(MINIMAL + peer(address='"[2001:db8::2]:30057"')).peers[0]
    assert p.address == (ipaddress.ip_address("2001:db8::2"), 30057)
    p = config.parse(MINIMAL + peer(address='"10.0.0.2"')).peers[0]
    assert p.address == (ipaddress.ip_address("10.0.0.2"), None)


def test_section_of_the_wrong_type() -> None:
    e = err("state = 3\n" + MINIMAL)
    assert e.key == "state" and e.expected == "a table" and e.found == "3 (integer)"
    e = err("peers = 3\n" + MINIMAL)
    assert e.key == "peers" and "array of tables" in e.expected


def test_missing_required() -> None:
    e = err("[state]\ndir = '/x'\n")
    assert e.key == "identity" and "required" in e.found
    e = err("[identity]\nisd_as = '1-ff00:0:110'\n")
    assert e.key == "identity.private_key_file" and "required" in e.found
    e = err(MINIMAL + "[[peers]]\nname = 'a'\nisd_as = '1-ff00:0:111'\n")
    assert e.key == "peers[0].public_key"


def test_unknown_keys_are_errors_with_a_suggestion() -> None:
    e = err(MINIMAL + peer(pubkey='"x"'))
    assert e.key == "peers[0].pubkey"
    assert "did you mean peers[0].public_key?" in e.found
    e = err(MINIMAL + "[paths]\nprobe_interval = 100\n")
    assert e.key == "paths.probe_interval" and "did you mean paths.probe_interval_ms?" in e.found
    e = err(MINIMAL + "[pahts]\n")
    assert e.key == "pahts" and "did you mean paths?" in e.found
    e = err(MINIMAL + "[paths]\nzzz = 1\n")
    assert "did you mean" not in e.found and "probe_interval_ms" in e.expected


def test_cross_checks() -> None:
    e = err(MINIMAL + peer() + peer(public_key=f'"{KEY_B}"'))
    assert e.key == "peers[1].name" and "also peers[0]" in e.found
    e = err(MINIMAL + peer() + peer(name='"b"'))
    assert e.key == "peers[1].public_key" and "the key of peers[0]" in e.found
    e = err(
        MINIMAL
        + peer(remote_prefixes='["10.2.0.0/16"]')
        + peer(name='"b"', public_key=f'"{KEY_B}"', remote_prefixes='["192.0.2.0/24", "10.2.128.0/17"]')
    )
    assert e.key == "peers[1].remote_prefixes[1]" and "overlaps 10.2.0.0/16 at peers[0]" in e.found
    e = err(MINIMAL + '[paths]\npreferred_ases = ["1-ff00:0:2"]\nexcluded_ases = ["1-ff00:0:2"]\n')
    assert e.key == "paths.excluded_ases"


def test_toml_syntax_error_names_the_file_and_line() -> None:
    e = err(MINIMAL + "[paths\n", "/tmp/x.toml")
    assert e.file == "/tmp/x.toml" and "syntax error" in e.found and "line" in e.found


def test_load_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="a directory"):
        config.load(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        config.load(bad)


def test_check_files(tmp_path: Path) -> None:
    cfg_file = tmp_path / "appliance.toml"
    cfg_file.write_text(MINIMAL)
    with pytest.raises(
        ConfigError, match=r"identity.private_key_file: expected an existing file.*no such file"
    ):
        config.load(cfg_file, check_files_exist=True)
    key = tmp_path / "private.key"
    key.write_text("x")
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"only its owner can read \(chmod 600\), found .* mode 644"):
        config.load(cfg_file, check_files_exist=True)
    key.chmod(0o600)
    assert config.load(cfg_file, check_files_exist=True).identity.private_key_file == key
    assert os.stat(key).st_mode & 0o777 == 0o600


@given(st.text(max_size=200))
def test_arbitrary_text_gives_config_error_or_config(text: str) -> None:
    try:
        config.parse(MINIMAL + "\n" + text)
    except ConfigError as e:
        assert str(e).startswith("/etc/scion-appliance/appliance.toml")


@given(st.integers(min_value=0, max_value=(1 << 20) + 64))
def test_window_size_rule(n: int) -> None:
    text = MINIMAL + f"[replay]\nwindow_size = {n}\n"
    if 64 <= n <= 1 << 20 and n % 64 == 0:
        assert config.parse(text).replay.window_size == n
    else:
        assert err(text).key == "replay.window_size"


# -- path source and peer probing (the service's additions) -------------------------------------------


def test_catalogue_probe_address_and_keepalive() -> None:
    cfg = config.parse(MINIMAL + '[paths]\ncatalogue = "lab/paths.json"\n' + peer(probe_address='"10.0.0.1"'))
    assert cfg.paths.catalogue == Path("/etc/scion-appliance/lab/paths.json")  # relative to the file
    assert cfg.peers[0].probe_address == ipaddress.ip_address("10.0.0.1")
    assert cfg.peers[0].keepalive_s == 5.0
    defaults = config.parse(MINIMAL + peer())
    assert defaults.paths.catalogue is None and defaults.peers[0].probe_address is None
    assert config.parse(MINIMAL + peer(keepalive_s="0")).peers[0].keepalive_s == 0.0
    assert config.load(EXAMPLE).peer("branch-a").probe_address == ipaddress.ip_address("10.0.0.1")


@pytest.mark.parametrize(
    ("fields", "key", "found_part"),
    [
        ({"probe_address": '"router.example"'}, "peers[0].probe_address", "'router.example' (string)"),
        ({"probe_address": "1"}, "peers[0].probe_address", "1 (integer)"),
        ({"keepalive_s": "0.05"}, "peers[0].keepalive_s", "0.05 (out of range)"),
        ({"keepalive_s": "4000"}, "peers[0].keepalive_s", "4000 (out of range)"),
        ({"keepalive_s": '"5s"'}, "peers[0].keepalive_s", "'5s' (string)"),
    ],
)
def test_bad_probe_and_keepalive_values(fields: dict[str, str], key: str, found_part: str) -> None:
    e = err(MINIMAL + peer(**fields))
    assert e.key == key and found_part in e.found and e.expected


def test_bad_catalogue_value_and_missing_file(tmp_path: Path) -> None:
    e = err(MINIMAL + "[paths]\ncatalogue = 7\n")
    assert e.key == "paths.catalogue" and e.found == "7 (integer)" and "paths.json" in e.expected
    cfg_file = tmp_path / "appliance.toml"
    cfg_file.write_text(MINIMAL.replace('"private.key"', '"k"') + '[paths]\ncatalogue = "none.json"\n')
    (tmp_path / "k").write_text("x")
    (tmp_path / "k").chmod(0o600)
    with pytest.raises(ConfigError, match=r"paths.catalogue: expected an existing file, found .*none.json"):
        config.load(cfg_file, check_files_exist=True)


def test_datapath_threads_default_and_values() -> None:
    assert config.parse(MINIMAL).datapath.threads is True
    assert config.parse(MINIMAL + "[datapath]\nthreads = false\n").datapath.threads is False
    e = err(MINIMAL + '[datapath]\nthreads = "no"\n')
    assert e.key == "datapath.threads"
