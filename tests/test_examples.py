"""The shipped examples are what they say: the sample config names every key and serves, the
systemd unit waits for the master's own readiness signal."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from licmaster.daemon.config import Config, load_config
from licmaster.testing.process import ROOT

EXAMPLES = ROOT / "examples"


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
