"""The shipped examples are what they say: the sample config names every key and serves, the
systemd unit waits for the master's own readiness signal, and the unit, its sysusers snippet and the
sample config agree on one layout (docs/operations.md, "Under systemd") that systemd accepts."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from licmaster.daemon.config import Config, load_config
from licmaster.testing.process import ROOT

EXAMPLES = ROOT / "examples"
UNIT = EXAMPLES / "licmaster.service"
SYSUSERS = EXAMPLES / "licmaster.sysusers.conf"
# Where docs/operations.md's install steps put things: `python3 -m venv /opt/licmaster` makes the
# entry point, the sample config is installed as /etc/licmaster/licmaster.toml.
INSTALLED = Path("/opt/licmaster/bin/licmaster")
INSTALLED_CONFIG = "/etc/licmaster/licmaster.toml"


def unit_settings(path: Path = UNIT) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, in order (a key may repeat), sections ignored."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and line[0] not in "#;[" and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def state_directory() -> Path:
    """The unit's StateDirectory= as the system manager places it: /var/lib/NAME."""
    (name,) = unit_settings()["StateDirectory"]
    return Path("/var/lib") / name


def test_the_sample_config_loads_and_names_every_key() -> None:
    config = load_config(EXAMPLES / "licmaster.toml")
    text = (EXAMPLES / "licmaster.toml").read_text()
    named = set(re.findall(r"^#? ?([a-z_]+) = ", text, re.MULTILINE))
    assert named == {f.name for f in fields(Config)}
    assert config.licenses == (EXAMPLES / "office.toml",)  # relative to the config file


def test_serve_tells_systemd_it_is_ready_as_the_unit_expects(tmp_path: Path) -> None:
    unit = (EXAMPLES / "licmaster.service").read_text()
    assert "Type=notify" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(20)
        proc = subprocess.Popen([sys.executable, "-m", "licmaster.cli", "serve", "--licenses", str(EXAMPLES / "office.toml"),
                                 "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--http", ""],
                                env={**os.environ, "NOTIFY_SOCKET": path, "PYTHONPATH": str(ROOT)}, cwd=tmp_path,
                                stderr=subprocess.DEVNULL)
        try:
            ready = notify.recv(4096).decode()
            assert "READY=1" in ready.splitlines() and "STATUS=serving PBXs on 127.0.0.1:" in ready
            proc.terminate()
            assert "STOPPING=1" in notify.recv(4096).decode()
            assert proc.wait(20) == 0
        finally:
            proc.kill()


def test_the_sample_site_policy_holds_against_the_sample_licenses() -> None:
    out = subprocess.run([sys.executable, "-m", "licmaster.cli", "check", str(EXAMPLES / "office.toml"), "--policy",
                          str(EXAMPLES / "sites.toml")], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Sites (" in out.stdout and "OK" in out.stdout.split("Sites (")[1].splitlines()[0]
    assert "hq               PBX-Port           guaranteed     0, can reach    70" in out.stdout
    assert "note: PBX-Operator: only @hq may draw it, except hq-lab" in out.stdout


def test_the_sample_config_keeps_its_data_where_the_unit_lets_the_master_write(tmp_path: Path) -> None:
    """Under ProtectSystem=strict the master may write only its StateDirectory=. The sample config,
    installed where the unit reads it, must put data_dir there (a relative one resolves next to the
    config file, in read-only /etc, and the start fails)."""
    unit = unit_settings()
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ExecStart"] == [f"{INSTALLED} serve --config {INSTALLED_CONFIG}"]
    installed = tmp_path / "etc" / "licmaster" / "licmaster.toml"  # wherever it lands, the same data_dir
    installed.parent.mkdir(parents=True)
    shutil.copy(EXAMPLES / "licmaster.toml", installed)
    assert load_config(installed).data_dir == state_directory() == Path("/var/lib/licmaster")
    assert unit["WorkingDirectory"] == [str(state_directory())]
    assert all(Path(p) == state_directory() for p in unit.get("ReadWritePaths", []))


def sysusers_entries() -> list[list[str]]:
    """The `u` lines of the sysusers snippet, split as sysusers.d(5) reads them (quoted GECOS)."""
    return [shlex.split(line) for line in SYSUSERS.read_text().splitlines() if line.startswith("u ")]


def test_the_sysusers_snippet_makes_the_user_the_unit_runs_as() -> None:
    """User= names a fixed user (the unit says why not DynamicUser=): the snippet must make that user
    and its group, with the data directory as its home."""
    unit = unit_settings()
    assert "DynamicUser" not in unit
    (entry,) = sysusers_entries()
    assert entry[1] == unit["User"][0] == unit["Group"][0] == "licmaster"
    assert entry[4] == str(state_directory())


def test_systemd_sysusers_accepts_the_snippet(tmp_path: Path) -> None:
    """`systemd-sysusers --root` applies the shipped snippet to an empty root: the user and group the
    unit names exist afterwards, with the home the snippet says."""
    tool = shutil.which("systemd-sysusers")
    if tool is None:
        pytest.skip("systemd-sysusers is not installed (Debian package systemd; scripts/setup-test-host)")
    (tmp_path / "etc").mkdir()
    out = subprocess.run([tool, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0] for line in (tmp_path / "etc" / "group").read_text().splitlines()}
    assert passwd["licmaster"][5] == str(state_directory()) and "licmaster" in groups


def _host_unit_dirs() -> list[Path]:
    return [d for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if d.is_dir()]


def test_systemd_analyze_verifies_the_shipped_unit_on_the_documented_layout(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the shipped unit, byte for byte, under `--root` = a host laid out as
    docs/operations.md installs it: licmaster's entry point at /opt/licmaster/bin/licmaster (a copy
    of the one installed here, or a stand-in script: verify checks only that it is executable), the
    host's own copies of the other programs the unit runs (/bin/kill) and of its targets. Nothing in
    the root is placed where the unit says, only where the install steps do: a unit naming another
    path for licmaster (the old /usr/local/bin/licmaster) fails with `is not executable`. verify
    exits 0 on unknown keys and bad values, only warning, so any line about the unit fails too."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd; scripts/setup-test-host)")
    if not _host_unit_dirs():
        pytest.skip("no systemd unit directory on this host to take the targets from")
    docs = (ROOT / "docs" / "operations.md").read_text()
    assert f"python3 -m venv {INSTALLED.parent.parent}" in docs and INSTALLED_CONFIG in docs

    root = tmp_path / "root"
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copy(UNIT, units / UNIT.name)
    targets = root / "usr" / "lib" / "systemd" / "system"
    targets.mkdir(parents=True)
    for directory in _host_unit_dirs():
        for target in directory.glob("*.target"):
            if target.is_file() and not (targets / target.name).exists():
                shutil.copy(target, targets / target.name)
    entry = root / INSTALLED.relative_to("/")
    entry.parent.mkdir(parents=True)
    real = shutil.which("licmaster")
    if real is not None:
        shutil.copy(real, entry)
    else:
        entry.write_text(f"#!/bin/sh\nexec {sys.executable} -m licmaster.cli \"$@\"\n")
    entry.chmod(0o755)
    for key, values in unit_settings().items():
        if key.startswith("Exec"):
            for value in values:
                program = Path(value.split()[0].lstrip("-@:+!"))
                if program.name != "licmaster" and program.is_file():
                    inside = root / program.relative_to("/")
                    inside.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(program, inside)  # follows symlinks: the file itself, executable

    out = subprocess.run([analyze, "verify", f"--root={root}", str(units / UNIT.name)], capture_output=True, text=True)
    if out.returncode != 0 and "--root is only supported" in out.stderr:
        pytest.skip(f"this systemd-analyze cannot verify under --root: {out.stderr.strip()}")
    about_the_unit = [line for line in out.stderr.splitlines() if "licmaster" in line]
    assert out.returncode == 0 and not about_the_unit, out.stderr
