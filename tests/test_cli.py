"""`licmaster check` as a planner runs it: a real process, real files."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "licmaster.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_check_prints_the_verdict_and_exits_0_on_the_example() -> None:
    out = run("check", "examples/office.toml")
    assert out.returncode == 0, out.stderr
    assert "Standby function: available" in out.stdout


def test_check_json_lists_families_errors_warnings_with_rules(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[license]]\ntype = "PBX-Port11"\ncount = 100\n[[license]]\ntype = "PBX-Port13"\ncount = 100\n'
                   '[[license]]\ntype = "Relay-PRIs"\ncount = 1\n')
    out = run("check", str(bad), "--firmware", "13", "--json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert set(doc) >= {"families", "errors", "warnings"}
    assert [e["rule"] for e in doc["errors"]] == ["R-HW-1"]
    assert all("message" in e for e in doc["errors"])
