"""The Debian source tree in packaging/deb/debian, read as files: what dpkg-buildpackage and systemd will be
handed agrees with the project (versions, CLI commands, paths) and with what issue 7 asks of the unit and
the maintainer scripts.

Building, lintian, installing, running the installed program in lab mode, upgrading and purging happen
for real in packaging/deb/ci-check, which scripts/test runs after pytest (root on Debian only).
"""

from __future__ import annotations

import re
import shlex
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from scion_appliance import __version__
from scion_appliance.cli import build_parser, main
from scion_appliance.config import DEFAULT_CONFIG_PATH

ROOT = Path(__file__).resolve().parent.parent
DEB = ROOT / "packaging" / "deb"
DEBIAN = DEB / "debian"
NAME = "scion-appliance"
UNIT = DEBIAN / f"{NAME}.service"
SCRIPTS = ("postinst", "prerm", "postrm")
# The actions dpkg calls each script with (Debian policy, chapter 6 and its flowcharts).
ACTIONS = {
    "postinst": ("configure", "abort-upgrade", "abort-remove", "abort-deconfigure"),
    "prerm": ("remove", "upgrade", "deconfigure", "failed-upgrade"),
    "postrm": ("remove", "purge", "upgrade", "failed-upgrade", "abort-install", "abort-upgrade", "disappear"),
}


def changelog_version() -> str:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    m = re.fullmatch(rf"{NAME} \(([^)]+)\) [a-z-]+; urgency=[a-z]+", first)
    assert m, f"changelog's first line is not a Debian changelog header: {first!r}"
    return m.group(1)


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_changelog_version_matches_pyproject() -> None:
    version = changelog_version()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    upstream, _, revision = version.rpartition("-")
    assert upstream == pyproject == __version__  # debian/rules refuses to build otherwise
    assert revision[:1].isdigit()
    if shutil.which("dpkg-parsechangelog"):
        parsed = subprocess.run(
            ["dpkg-parsechangelog", "-l", str(DEBIAN / "changelog"), "-S", "Version"],
            check=True,
            capture_output=True,
            text=True,
        )
        assert parsed.stdout.strip() == version


def test_control_uses_debhelper_and_dh_virtualenv() -> None:
    control = (DEBIAN / "control").read_text()
    source, binary = control.split("\n\n", 1)
    assert "debhelper-compat (= 13)" in source and "dh-virtualenv" in source
    for lib in ("libsodium-dev", "libssl-dev", "python3-dev", "help2man"):
        assert lib in source, lib
    assert re.search(rf"^Package: {NAME}$", binary, re.M) and "Architecture: any" in binary
    assert "${shlibs:Depends}" in binary and "${misc:Depends}" in binary
    rules = DEBIAN / "rules"
    assert rules.stat().st_mode & stat.S_IXUSR
    text = rules.read_text()
    assert text.startswith("#!/usr/bin/make -f\n") and "\tdh $@ --with python-virtualenv\n" in text
    assert "export DH_VIRTUALENV_INSTALL_ROOT = /usr/lib\n" in text
    assert (DEBIAN / "source" / "format").read_text().strip() == "3.0 (quilt)"


def test_sysusers_and_links() -> None:
    lines = [
        shlex.split(line)
        for line in (DEBIAN / f"{NAME}.sysusers").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines == [["u", NAME, "-", "SCION appliance", f"/var/lib/{NAME}"]]
    assert (DEBIAN / f"{NAME}.links").read_text().split() == [
        f"usr/lib/{NAME}/bin/{NAME}",
        f"usr/bin/{NAME}",
    ]


@pytest.mark.parametrize("script", SCRIPTS)
def test_maintainer_script_is_valid_sh(script: str) -> None:
    path = DEBIAN / f"{NAME}.{script}"
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n") and "\nset -e\n" in text and "\n#DEBHELPER#\n" in text
    assert path.stat().st_mode & stat.S_IXUSR
    subprocess.run(["sh", "-n", str(path)], check=True)
    # Every action dpkg may pass has a branch; anything else is refused (exit 1), as policy asks.
    for action in ACTIONS[script]:
        assert re.search(rf"^\s*(\S+\|)*{action}(\|\S+)*\)", text, re.M), f"{script} has no {action} branch"
    done = subprocess.run(["sh", str(path), "no-such-action"], capture_output=True, text=True)
    assert done.returncode == 1 and "unknown argument 'no-such-action'" in done.stderr


def test_maintainer_scripts_never_enable_or_start_the_service() -> None:
    for script in SCRIPTS:
        text = re.sub(r"<<(\w+)\n.*?\n\1\n", "", (DEBIAN / f"{NAME}.{script}").read_text(), flags=re.S)
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        for tool, rest in re.findall(
            r"\b(systemctl|deb-systemd-invoke|deb-systemd-helper)\s+([^;|&\n]*)", code
        ):
            verb = next(w for w in rest.split() if not w.startswith("-"))
            assert (script, verb) == ("prerm", "stop"), f"{script}: {tool} {rest}"
    # debhelper's part: installed, never enabled or started; try-restart on upgrade.
    assert (
        "dh_installsystemd --no-enable --no-start --restart-after-upgrade" in (DEBIAN / "rules").read_text()
    )
    purge = (DEBIAN / f"{NAME}.postrm").read_text()
    assert 'userdel "$NAME"' in purge and 'rm -rf "/var/lib/$NAME"' in purge


def test_unit_has_what_the_issue_asks() -> None:
    s = unit_settings()
    want = {
        "Type": "notify",  # scion_appliance.service sends READY=1 once the control socket answers
        "User": NAME,
        "Group": NAME,
        "StateDirectory": NAME,
        "RuntimeDirectory": NAME,
        "ConfigurationDirectory": NAME,
        "AmbientCapabilities": "CAP_NET_ADMIN",
        "CapabilityBoundingSet": "CAP_NET_ADMIN",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "DevicePolicy": "closed",
        "DeviceAllow": "/dev/net/tun rw",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "SystemCallArchitectures": "native",
        "Restart": "on-failure",
        "EnvironmentFile": f"-/etc/default/{NAME}",
    }
    for key, value in want.items():
        assert s.get(key) == [value], key
    # The config's default control socket lies in the RuntimeDirectory, its state dir is the StateDirectory.
    example = tomllib.loads((ROOT / "packaging" / "appliance.example.toml").read_text())
    assert example["control"]["socket"] == f"/run/{NAME}/control.sock"
    assert example["state"]["dir"] == f"/var/lib/{NAME}"
    assert (DEBIAN / f"{NAME}.default").read_text().count("OTEL_") >= 4


def test_unit_runs_commands_the_cli_has() -> None:
    commands = unit_settings()["ExecStartPre"] + unit_settings()["ExecStart"]
    assert len(commands) == 2
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == f"/usr/bin/{NAME}"
        args = build_parser().parse_args(argv[1:])  # SystemExit here: the unit names a missing command
        assert args.command in ("run", "check-config")
        given = getattr(args, "config", None) or getattr(args, "file", None)
        assert Path(given) == DEFAULT_CONFIG_PATH


def test_shipped_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    # packaging/appliance.example.toml becomes the conffile /etc/scion-appliance/appliance.toml.
    assert (
        "packaging/appliance.example.toml debian/$(PKG)/etc/$(PKG)/appliance.toml"
        in (DEBIAN / "rules").read_text()
    )
    assert main(["check-config", str(ROOT / "packaging" / "appliance.example.toml")]) == 0
    assert capsys.readouterr().out.startswith(f"{ROOT / 'packaging' / 'appliance.example.toml'}: ok:")


def test_lintian_overrides_each_have_a_reason() -> None:
    lines = (DEBIAN / f"{NAME}.lintian-overrides").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"{NAME}:"):
            assert lines[i - 1].startswith("#") or lines[i - 1].startswith(f"{NAME}:"), line


def test_ci_check_runs_from_scripts_test() -> None:
    for tool in ("build", "ci-check"):
        path = DEB / tool
        assert path.stat().st_mode & stat.S_IXUSR
        subprocess.run(["bash", "-n", str(path)], check=True)
    assert "packaging/deb/ci-check" in (ROOT / "scripts" / "test").read_text()
    assert "dpkg-buildpackage -us -uc -b" in (DEB / "build").read_text()
