"""The Debian package built by packaging/deb/build: what it holds, and that dpkg installs, upgrades,
removes and purges it.

- The fast tests read the packaging files only: versions agree, maintainer scripts are valid sh and
  answer every dpkg action, the systemd unit runs commands the CLI has.
- The slow tests build the .deb once (a minute or more: the native extensions are compiled with Debian's
  /usr/bin/python3) and check ``dpkg-deb --info/--contents``, run the extracted virtualenv, run lintian
  when it is installed, and install, upgrade, remove and purge the package with dpkg for real inside a
  throwaway overlay of this machine's root (root only; the host's own files and dpkg database are never
  written). ``SCION_DEB_FILE=dist/scion-appliance_..._amd64.deb`` tests that package instead of building.
- Known answers for the golden packet come from /work/shared/vectors/README.md (scionproto's
  pkg/slayers/testdata), as in tests/test_decode.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from scion_appliance import __version__
from scion_appliance.cli import build_parser
from scion_appliance.config import DEFAULT_CONFIG_PATH

ROOT = Path(__file__).resolve().parent.parent
DEB_DIR = ROOT / "packaging" / "deb"
UNIT = ROOT / "packaging" / "scion-appliance.service"
GOLDEN = ROOT / "tests" / "data" / "scionproto-golden" / "scion-udp.bin"
NAME = "scion-appliance"
PREFIX = "/opt/scion-appliance"
SCRIPTS = ("postinst", "prerm", "postrm")
# The actions dpkg calls each script with (Debian policy, chapter 6 and its flowcharts).
ACTIONS = {
    "postinst": ("configure", "abort-upgrade", "abort-remove", "abort-deconfigure"),
    "prerm": ("remove", "upgrade", "deconfigure", "failed-upgrade"),
    "postrm": ("remove", "purge", "upgrade", "failed-upgrade", "abort-install", "abort-upgrade", "disappear"),
}


def changelog_version() -> str:
    first = (DEB_DIR / "changelog").read_text().splitlines()[0]
    m = re.fullmatch(r"scion-appliance \(([^)]+)\) [a-z-]+; urgency=[a-z]+", first)
    assert m, f"changelog's first line is not a Debian changelog header: {first!r}"
    return m.group(1)


def debian_python() -> str:
    """The X.Y of Debian's /usr/bin/python3, which the package's virtualenv is made with."""
    out = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


# -- fast: the packaging files --------------------------------------------------------------------------


def test_changelog_version_matches_pyproject() -> None:
    version = changelog_version()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    upstream, _, revision = version.rpartition("-")
    assert upstream == pyproject == __version__
    assert revision.isdigit()


@pytest.mark.parametrize("script", SCRIPTS)
def test_maintainer_script_is_valid_sh(script: str) -> None:
    path = DEB_DIR / script
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n") and "\nset -e\n" in text
    assert path.stat().st_mode & stat.S_IXUSR
    subprocess.run(["sh", "-n", str(path)], check=True)
    # Every action dpkg may pass has a branch; anything else is refused (exit 1), as policy asks.
    for action in ACTIONS[script]:
        assert re.search(rf"^\s*(\S+\|)*{action}(\|\S+)*\)", text, re.M), f"{script} has no {action} branch"
    done = subprocess.run(["sh", str(path), "no-such-action"], capture_output=True, text=True)
    assert done.returncode == 1 and "unknown argument 'no-such-action'" in done.stderr


def test_maintainer_scripts_never_enable_or_start_the_service() -> None:
    # The only service actions: systemd re-reads units, and an upgrade restarts a service that was running.
    allowed = {"daemon-reload", "try-restart", "stop"}
    for script in SCRIPTS:
        text = re.sub(r"<<(\w+)\n.*?\n\1\n", "", (DEB_DIR / script).read_text(), flags=re.S)  # messages
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        calls = re.findall(
            r"(?<!command -v )\b(systemctl|deb-systemd-invoke|deb-systemd-helper)\s+([^;|&\n]*)", code
        )
        for tool, rest in calls:
            verb = next(w for w in rest.split() if not w.startswith("-"))
            assert verb in allowed, f"{script}: {tool} {rest}"
    assert 'deb-systemd-invoke try-restart "$NAME.service"' in (DEB_DIR / "postinst").read_text()
    assert 'deb-systemd-invoke stop "$NAME.service"' in (DEB_DIR / "prerm").read_text()


def test_unit_runs_commands_the_cli_has() -> None:
    unit = UNIT.read_text()
    assert re.search(rf"^User={NAME}$", unit, re.M) and re.search(rf"^Group={NAME}$", unit, re.M)
    commands = re.findall(r"^Exec(?:Start|StartPre)=(.+)$", unit, re.M)
    assert len(commands) >= 2
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == f"/usr/bin/{NAME}"
        args = build_parser().parse_args(argv[1:])  # SystemExit here: the unit names a missing command
        assert args.command in ("run", "check-config")
        given = getattr(args, "config", None) or getattr(args, "file", None)
        assert Path(given) == DEFAULT_CONFIG_PATH
    # The environment file the unit reads is the one the package ships.
    assert f"EnvironmentFile=-/etc/default/{NAME}" in unit
    assert (DEB_DIR / "default").read_text().count("OTEL_") >= 4


def test_wrapper_execs_the_venv_entry_point() -> None:
    text = (DEB_DIR / "wrapper").read_text()
    assert text.startswith("#!/bin/sh\n")
    assert text.rstrip().endswith(f'exec {PREFIX}/bin/{NAME} "$@"')


# -- slow: the built package ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed: the Debian package needs a Debian machine (apt install dpkg)")
    given = os.environ.get("SCION_DEB_FILE")
    if given:
        return Path(given).resolve()
    base = tmp_path_factory.mktemp("deb")
    done = subprocess.run(
        [str(DEB_DIR / "build"), "--out", str(base / "out"), "--work", str(base / "work")],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, f"packaging/deb/build failed:\n{done.stderr[-4000:]}"
    path = Path(done.stdout.strip().splitlines()[-1])
    arch = subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True, text=True)
    assert path.name == f"{NAME}_{changelog_version()}_{arch.stdout.strip()}.deb"
    return path


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def extracted(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extracted")
    dpkg_deb("-x", str(deb), str(root))
    dpkg_deb("-e", str(deb), str(root / "DEBIAN"))
    return root


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_control_fields(deb: Path, extracted: Path) -> None:
    fields = dpkg_deb("-f", str(deb), "Package", "Version", "Architecture", "Depends", "Installed-Size")
    f = dict(line.split(": ", 1) for line in fields.splitlines())
    assert f["Package"] == NAME and f["Version"] == changelog_version()
    depends = {d.split(" ")[0]: d for d in f["Depends"].split(", ")}
    # The interpreter the venv points at, the libraries dpkg-shlibdeps found, and what the scripts call.
    assert set(depends) >= {
        f"python{debian_python()}",
        "libsodium23",
        "libssl3",
        "libc6",
        "adduser",
        "iproute2",
    }
    assert re.fullmatch(r"libsodium23 \(>= [\d.]+\)", depends["libsodium23"])
    assert int(f["Installed-Size"]) > 10_000  # KiB: the venv is tens of MB
    control = extracted / "DEBIAN"
    assert (control / "conffiles").read_text().split() == [
        f"/etc/{NAME}/appliance.toml.example",
        f"/etc/default/{NAME}",
    ]
    for script in SCRIPTS:
        assert (control / script).read_bytes() == (DEB_DIR / script).read_bytes()
        assert (control / script).stat().st_mode & 0o777 == 0o755
    info = dpkg_deb("--info", str(deb))
    assert all(re.search(rf"\*\s+{s}\s", info) for s in SCRIPTS)  # dpkg-deb marks executable members


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_contents(deb: Path) -> None:
    listing = dpkg_deb("--contents", str(deb)).splitlines()
    entries = {}
    for line in listing:
        parts = line.split(None, 5)
        path = parts[5].split(" -> ")[0]
        entries[path.removeprefix(".").rstrip("/") or "/"] = (parts[0], parts[1], parts[5])
    assert all(owner == "root/root" for _, owner, _ in entries.values())
    for path, mode in [
        (f"/usr/bin/{NAME}", "-rwxr-xr-x"),
        (f"/lib/systemd/system/{NAME}.service", "-rw-r--r--"),
        (f"/etc/{NAME}/appliance.toml.example", "-rw-r--r--"),
        (f"/etc/default/{NAME}", "-rw-r--r--"),
        (f"/etc/{NAME}", "drwxr-x---"),
        (f"/usr/share/doc/{NAME}/copyright", "-rw-r--r--"),
        (f"/usr/share/doc/{NAME}/changelog.Debian.gz", "-rw-r--r--"),
        (f"/usr/share/man/man1/{NAME}.1.gz", "-rw-r--r--"),
        (f"/usr/share/lintian/overrides/{NAME}", "-rw-r--r--"),
        (f"{PREFIX}/bin/{NAME}", "-rwxr-xr-x"),
        (f"{PREFIX}/pyvenv.cfg", "-rw-r--r--"),
    ]:
        assert entries.get(path, ("missing",))[0] == mode, path
    py = debian_python()
    assert entries[f"{PREFIX}/bin/python{py}"][2].endswith(f" -> /usr/bin/python{py}")
    # Every native module of the tree is in, built for Debian's python; no Cython intermediates.
    fast = f"{PREFIX}/lib/python{py}/site-packages/scion_appliance/_fast"
    tag = f"cpython-{py.replace('.', '')}"
    for pyx in sorted((ROOT / "scion_appliance" / "_fast").glob("*.pyx")):
        assert any(p.startswith(f"{fast}/{pyx.stem}.{tag}") and p.endswith(".so") for p in entries), pyx.stem
    assert not [p for p in entries if p.startswith(fast) and p.endswith(".c")]
    for dep in ("trio", "nacl", "rocksdict", "opentelemetry", "hypercorn", "starlette", "httpx"):
        assert f"{PREFIX}/lib/python{py}/site-packages/{dep}" in entries, dep


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_extracted_venv_runs(extracted: Path, tmp_path: Path) -> None:
    venv = extracted / PREFIX.lstrip("/")
    entry = venv / "bin" / NAME
    assert entry.read_text().splitlines()[0] == f"#!{PREFIX}/bin/python"
    assert "home = /usr/bin\n" in (venv / "pyvenv.cfg").read_text()
    before = sorted(p for p in extracted.rglob("*"))
    # The shebang names the installed path; here the extracted copy's own interpreter runs the entry point.
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    run = [str(venv / "bin" / "python"), str(entry)]
    done = subprocess.run([*run, "--version"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"scion-appliance {__version__}", done.stderr
    done = subprocess.run(
        [*run, "decode", str(GOLDEN)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    o = json.loads(done.stdout)
    assert (o["src_isd_as"], o["dst_isd_as"], o["src_host"], o["dst_host"]) == (
        "2-ff00:0:222",
        "1-ff00:0:111",
        "10.0.0.100",
        "2001:db8::68",
    )
    assert o["l4"]["checksum"] == 0xB7D2 and o["l4"]["checksum_valid"] is True
    # The native codec and the dependencies came from the package, not from the source tree.
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import scion_appliance._fast.codec as c, rocksdict, nacl; print(c.__file__); print(rocksdict.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert all(w.startswith(str(venv)) for w in where)
    # Running wrote nothing into the tree (bytecode is shipped, unchecked-hash).
    assert sorted(p for p in extracted.rglob("*")) == before


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_man_page_lists_every_command(extracted: Path) -> None:
    import gzip

    from scion_appliance.cli import COMMANDS

    page = gzip.decompress((extracted / f"usr/share/man/man1/{NAME}.1.gz").read_bytes()).decode()
    assert page.startswith('.\\"') and '.TH SCION-APPLIANCE "1"' in page
    for name in COMMANDS:
        assert f'.SS "scion-appliance {name}"' in page, name


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_lintian_finds_no_errors(deb: Path) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed (apt-get install lintian)")
    done = subprocess.run(["lintian", "--no-tag-display-limit", str(deb)], capture_output=True, text=True)
    errors = [line for line in done.stdout.splitlines() if line.startswith("E:")]
    assert not errors, "\n".join(errors)


# -- slow, root: dpkg for real, in a throwaway overlay of this machine's root --------------------------


class OverlayRoot:
    """This machine's root file system as a copy-on-write overlay whose writes go to a tmpfs, seen only
    in a private mount namespace: dpkg installs into it as into the real system, and the host keeps its
    files. Commands run chrooted into it; the namespace and all it wrote vanish at ``close``."""

    def __init__(self, base: Path) -> None:
        self.merged = base / "merged"
        script = f"""set -e
mount -t tmpfs tmpfs {base}
mkdir {base}/upper {base}/work {self.merged}
mount -t overlay overlay -o lowerdir=/,upperdir={base}/upper,workdir={base}/work {self.merged}
for d in proc sys dev; do mount --rbind /$d {self.merged}/$d; done
mount -t tmpfs tmpfs {self.merged}/tmp
mount -t tmpfs tmpfs {self.merged}/run
echo ready
exec cat >/dev/null
"""
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            # The namespace lives as long as this pipe: if the test process dies, cat sees EOF and exits.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.skip(f"cannot make an overlay of / in a mount namespace: {err.strip()}")

    def run(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [
                "nsenter",
                "-t",
                str(self.proc.pid),
                "-m",
                "chroot",
                str(self.merged),
                "/usr/bin/env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LC_ALL=C.UTF-8",
                "HOME=/root",
                "sh",
                "-c",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check:
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        return done

    def put(self, src: Path, dst: str) -> None:
        subprocess.run(
            ["nsenter", "-t", str(self.proc.pid), "-m", "cp", str(src), f"{self.merged}{dst}"], check=True
        )

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[OverlayRoot]:
    if os.geteuid() != 0:
        pytest.skip("installing with dpkg into an overlay of / needs root (mount namespace, overlayfs)")
    missing = [t for t in ("unshare", "nsenter", "chroot", "dpkg") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (util-linux, coreutils, dpkg)")
    base = tmp_path / "overlay"
    base.mkdir()
    root = OverlayRoot(base)
    try:
        yield root
    finally:
        root.close()


def upgraded_copy(deb: Path, out: Path) -> tuple[Path, str]:
    """The same package with the Debian revision bumped: what a rebuilt release looks like to dpkg."""
    version = changelog_version()
    upstream, _, revision = version.rpartition("-")
    newer = f"{upstream}-{int(revision) + 1}"
    tree = out / "tree"
    dpkg_deb("-R", str(deb), str(tree))
    control = tree / "DEBIAN" / "control"
    control.write_text(control.read_text().replace(f"Version: {version}\n", f"Version: {newer}\n"))
    path = out / f"{NAME}_{newer}.deb"
    dpkg_deb("--root-owner-group", "-b", str(tree), str(path))
    return path, newer


def scripts_only_package(out: Path, version: str) -> Path:
    """A package with the real maintainer scripts, conffiles and config directory but a one-file program
    instead of the virtualenv: what dpkg runs on install, upgrade, remove and purge, built in a second."""
    tree = out / f"tree-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    for script in SCRIPTS:
        shutil.copy2(DEB_DIR / script, tree / "DEBIAN" / script)
    (tree / "DEBIAN" / "conffiles").write_text(f"/etc/{NAME}/appliance.toml.example\n/etc/default/{NAME}\n")
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {NAME}\nVersion: {version}\nArchitecture: all\nMaintainer: tests <tests@example.org>\n"
        f"Depends: adduser\nDescription: maintainer scripts of {NAME} under test\n"
    )
    (tree / "etc" / NAME).mkdir(parents=True, mode=0o750)
    (tree / "etc" / NAME).chmod(0o750)
    shutil.copy(ROOT / "packaging" / "appliance.example.toml", tree / "etc" / NAME / "appliance.toml.example")
    (tree / "etc" / "default").mkdir()
    shutil.copy(DEB_DIR / "default", tree / "etc" / "default" / NAME)
    (tree / PREFIX.lstrip("/") / "bin").mkdir(parents=True)
    program = tree / PREFIX.lstrip("/") / "bin" / NAME
    program.write_text(f"#!/bin/sh\necho scion-appliance {version}\n")
    program.chmod(0o755)
    path = out / f"{NAME}_{version}_all.deb"
    dpkg_deb("--root-owner-group", "-b", str(tree), str(path))
    return path


def skip_if_installed_here(o: OverlayRoot) -> None:
    if o.run(f"dpkg-query -W -f='${{Status}}' {NAME}", check=False).stdout.endswith(" installed"):
        pytest.skip(
            f"{NAME} is installed on this machine itself; the overlay test needs a machine without it"
        )


def check_install(o: OverlayRoot, deb: str) -> str:
    """Install: the user and group, the config directory; the service is left alone. Returns the uid."""
    done = o.run(f"dpkg -i {deb}")
    assert "the service is not enabled" in done.stdout
    user = o.run(f"getent passwd {NAME}").stdout.strip().split(":")
    assert user[5:] == [f"/var/lib/{NAME}", "/usr/sbin/nologin"]
    assert o.run(f"getent group {NAME}").stdout.startswith(f"{NAME}:")
    assert o.run(f"stat -c '%U:%G %a' /etc/{NAME}").stdout.strip() == f"root:{NAME} 750"
    return user[2]


def check_upgrade(o: OverlayRoot, deb: str, version: str, uid: str) -> None:
    """Upgrade: state, the operator's config and local conffile edits are kept; the user is reused."""
    o.run(f"mkdir -p /var/lib/{NAME} && echo kept > /var/lib/{NAME}/marker")
    o.run(f"cp /etc/{NAME}/appliance.toml.example /etc/{NAME}/appliance.toml")
    o.run(f"echo OTEL_SERVICE_NAME=edge-1 >> /etc/default/{NAME}")
    done = o.run(f"dpkg -i {deb}")
    assert "the service is not enabled" not in done.stdout  # the first-install hint is not repeated
    assert o.run(f"dpkg-query -W -f='${{Version}}' {NAME}").stdout == version
    assert o.run(f"cat /var/lib/{NAME}/marker").stdout == "kept\n"
    assert "OTEL_SERVICE_NAME=edge-1" in o.run(f"cat /etc/default/{NAME}").stdout
    assert o.run(f"getent passwd {NAME}").stdout.split(":")[2] == uid
    assert o.run(f"stat -c '%U:%G %a' /etc/{NAME}").stdout.strip() == f"root:{NAME} 750"


def check_remove_and_purge(o: OverlayRoot, deb: str, uid: str) -> None:
    # Remove: the program goes; conffiles, state, the operator's config and the user stay.
    o.run(f"dpkg -r {NAME}")
    assert o.run(f"dpkg-query -W -f='${{Status}}' {NAME}").stdout == "deinstall ok config-files"
    assert o.run(f"test -e {PREFIX}", check=False).returncode == 1
    for kept in (f"/etc/default/{NAME}", f"/var/lib/{NAME}/marker", f"/etc/{NAME}/appliance.toml"):
        o.run(f"test -e {kept}")
    o.run(f"getent passwd {NAME}")

    # Purge with the operator's config still there: state goes, the user that owns their files stays.
    done = o.run(f"dpkg -P {NAME}")
    assert "user and group are kept" in done.stderr
    assert o.run(f"test -e /var/lib/{NAME}", check=False).returncode == 1
    assert o.run(f"test -e /etc/default/{NAME}", check=False).returncode == 1
    o.run(f"test -e /etc/{NAME}/appliance.toml")
    o.run(f"getent passwd {NAME}")

    # Install again (the existing user is reused) and purge with /etc/scion-appliance left empty: all gone.
    o.run(f"rm /etc/{NAME}/appliance.toml")
    o.run(f"dpkg -i {deb}")
    assert o.run(f"getent passwd {NAME}").stdout.split(":")[2] == uid
    o.run(f"dpkg -P {NAME}")
    assert o.run(f"dpkg-query -W {NAME}", check=False).returncode != 0
    for gone in (f"/etc/{NAME}", f"/var/lib/{NAME}", PREFIX):
        assert o.run(f"test -e {gone}", check=False).returncode == 1, gone
    assert o.run(f"getent passwd {NAME}", check=False).returncode == 2
    assert o.run(f"getent group {NAME}", check=False).returncode == 2


def test_maintainer_scripts_install_upgrade_remove_purge(overlay: OverlayRoot, tmp_path: Path) -> None:
    """The real maintainer scripts through dpkg's whole lifecycle, without building the program."""
    o = overlay
    skip_if_installed_here(o)
    o.put(scripts_only_package(tmp_path, "0.0.1-1"), "/tmp/v1.deb")
    o.put(scripts_only_package(tmp_path, "0.0.1-2"), "/tmp/v2.deb")
    uid = check_install(o, "/tmp/v1.deb")
    # A second configure (dpkg-reconfigure, or an interrupted install retried) changes nothing.
    if o.run("command -v dpkg-reconfigure", check=False).returncode == 0:
        o.run(f"dpkg-reconfigure {NAME}")
    assert o.run(f"getent passwd {NAME}").stdout.split(":")[2] == uid
    check_upgrade(o, "/tmp/v2.deb", "0.0.1-2", uid)
    check_remove_and_purge(o, "/tmp/v2.deb", uid)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_install_upgrade_remove_purge(deb: Path, overlay: OverlayRoot, tmp_path: Path) -> None:
    o = overlay
    skip_if_installed_here(o)
    o.put(deb, "/tmp/v1.deb")
    o.put(GOLDEN, "/tmp/golden.bin")
    uid = check_install(o, "/tmp/v1.deb")

    # The installed program runs, for root and for the service user; the shipped example config is valid.
    assert o.run(f"{NAME} --version").stdout.strip() == f"scion-appliance {__version__}"
    decoded = json.loads(o.run(f"{NAME} decode /tmp/golden.bin").stdout)
    assert decoded["dst_isd_as"] == "1-ff00:0:111" and decoded["l4"]["checksum_valid"] is True
    assert o.run(f"setpriv --reuid={NAME} --regid={NAME} --clear-groups {NAME} --version").returncode == 0
    o.run(f"{NAME} check-config /etc/{NAME}/appliance.toml.example")
    if o.run("command -v systemd-analyze", check=False).returncode == 0:
        verify = o.run(f"systemd-analyze verify /lib/systemd/system/{NAME}.service", check=False)
        assert verify.returncode == 0, verify.stderr
    # Running it wrote nothing under /opt/scion-appliance: every file still matches dpkg's md5sums.
    assert o.run(f"dpkg -V {NAME}").stdout == ""

    newer, newer_version = upgraded_copy(deb, tmp_path)
    o.put(newer, "/tmp/v2.deb")
    check_upgrade(o, "/tmp/v2.deb", newer_version, uid)
    assert o.run(f"{NAME} --version").returncode == 0
    check_remove_and_purge(o, "/tmp/v2.deb", uid)
    for gone in (f"/usr/bin/{NAME}", f"/lib/systemd/system/{NAME}.service"):
        assert o.run(f"test -e {gone}", check=False).returncode == 1, gone
