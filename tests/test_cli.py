"""`licmaster check` as a planner runs it: a real process, real files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


# ---------------------------------------------------------------- no traceback, whatever the state

def sim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slave_sim.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_both_tools_say_their_version() -> None:
    from licmaster import __version__
    assert run("--version").stdout.strip() == f"licmaster {__version__}"
    assert sim("--version").stdout.strip() == f"slave-sim {__version__}"


def test_a_drill_against_no_master_says_so_in_one_line_with_exit_2(tmp_path: Path) -> None:
    out = sim("run", "scenarios/quickstart.toml", "--master", "127.0.0.1:1", "--quiet", "--report-dir", str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    said = [line for line in out.stderr.splitlines() if "could not run" in line]
    assert len(said) == 1 and "127.0.0.1:1 did not answer" in said[0]


def test_status_reaches_the_console_by_host_and_port_and_says_so_on_the_pbx_port(tmp_path: Path) -> None:
    from .daemon import Daemon

    daemon = Daemon(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 3\n').start()
    try:
        assert daemon.http is not None
        out = run("status", "--url", daemon.http)  # host:port, no scheme
        assert out.returncode == 0 and "PBX-Port" in out.stdout, out.stderr
        wrong = run("status", "--url", f"http://{daemon.target}")  # the PBX port: MessagePack, not HTTP
        assert wrong.returncode == 1 and "does not answer as a licmaster console" in wrong.stderr
        assert "Traceback" not in wrong.stderr
        piped = subprocess.run(f"{sys.executable} -m licmaster.cli status --url {daemon.http} | head -1", shell=True,
                               capture_output=True, text=True, cwd=ROOT)
        assert piped.stdout.startswith("master ") and "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr
        assert "console at http://" in daemon.log  # serve says where its console is
    finally:
        daemon.stop()
    unreachable = run("status", "--url", daemon.http)
    assert unreachable.returncode == 1 and "cannot reach the console" in unreachable.stderr and "Traceback" not in unreachable.stderr


def test_the_journal_refuses_an_unknown_event_and_reads_since_an_age(tmp_path: Path) -> None:
    from .daemon import Daemon

    daemon = Daemon(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 3\n').start()
    daemon.stop()
    data = str(tmp_path / "m" / "data")
    unknown = run("journal", "--data-dir", data, "--event", "denied")
    assert unknown.returncode == 2 and "'denied' is no journal event" in unknown.stderr and "deny" in unknown.stderr
    recent = run("journal", "--data-dir", data, "--since", "1h")
    assert recent.returncode == 0 and " start " in recent.stdout and " stop " in recent.stdout
    future = run("journal", "--data-dir", data, "--since", "4102444800")  # 2100: nothing since
    assert future.returncode == 0 and future.stdout == ""
    bad = run("journal", "--data-dir", data, "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr
    missing = run("journal", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no journal" in missing.stderr and "Traceback" not in missing.stderr


async def test_report_csv_counts_a_taken_over_lease_once_for_its_holder_and_says_its_columns(tmp_path: Path) -> None:
    from licmaster.daemon.journal import Journal

    day = 1_764_000_000 // 86400 * 86400  # 2025-11-24T00:00Z
    journal = Journal(tmp_path / "data" / "journal.sqlite3")
    journal.rows += [(day + 1, "start"), *[(day + 2 + n, "grant", "hq", "port", f"u{n}", f"{day}.a.{n}", "PBX-Port13:1") for n in range(3)],
                     (day + 60, "takeover", "hq-spare", None, None, None, "hq"), (day + 70, "checkin", "hq-spare", "port", "u0", f"{day}.a.0"),
                     (day + 80, "bye", "hq-spare"), *[(day + 90 + n, "grant", "hq", "port", f"u{n}", f"{day}.b.{n}", "PBX-Port13:1") for n in range(3)],
                     (day + 120, "stop")]
    await journal.close()
    licenses = tmp_path / "licenses.toml"
    licenses.write_text('[[license]]\ntype = "PBX-Port13"\ncount = 4\n')
    out = run("report", "--data-dir", str(tmp_path / "data"), "--since", str(day), "--csv", "--licenses", str(licenses))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["day,family,node,peak,installed,headroom", "2025-11-24,PBX-Port,*,3,4,1",
                                       "2025-11-24,PBX-Port,hq,3,,", "2025-11-24,PBX-Port,hq-spare,3,,"]  # not hq 6
    helped = run("report", "--help")
    assert "--csv" in helped.stdout and "columns day,family,node,peak,installed,headroom;" in helped.stdout
    both = run("report", "--csv", "--html")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_reload_by_the_data_directory_says_what_changed_or_why_it_was_refused(tmp_path: Path) -> None:
    from .daemon import Daemon

    daemon = Daemon(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 3\n')
    daemon.start()
    try:
        data = str(tmp_path / "m" / "data")
        daemon.license_file.write_text('[[license]]\ntype = "PBX-Port13"\ncount = 5\n')
        out = run("reload", "--data-dir", data)
        assert out.returncode == 0 and "PBX-Port 3->5" in out.stdout, out.stdout + out.stderr
        daemon.license_file.write_text('[[license]]\ntype = "PBX-Nonsense"\ncount = 5\n')
        refused = run("reload", "--data-dir", data)
        assert refused.returncode == 1 and "REFUSED" in refused.stderr and "PBX-Nonsense" in refused.stderr
        assert daemon.http is not None
        usage = json.loads(subprocess.run([sys.executable, "-c", f"import urllib.request;print(urllib.request.urlopen("
                                           f"'http://{daemon.http}/api/v1/usage').read().decode())"],
                                          capture_output=True, text=True).stdout)
        assert usage["last_reload"]["ok"] is False and usage["last_reload"]["by"] == "SIGHUP"
        assert any(p["family"] == "PBX-Port" and p["installed"] == 5 for p in usage["pools"])  # the good set stays
    finally:
        daemon.stop()
    nobody = run("reload", "--data-dir", data)
    assert nobody.returncode == 2 and "no master is running" in nobody.stderr


async def test_status_shows_who_holds_what_and_an_operator_takes_one_back(tmp_path: Path) -> None:
    from licmaster.client import MasterClient

    from .daemon import Daemon, next_event

    manage = "manage-token-0123456789"
    licenses = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "App(phone)13"\ncount = 2\n'
    # The commands below run synchronously and block this loop (no heartbeats meanwhile): a lease
    # TTL of 30 s keeps pbx1's session through them on a loaded machine (3 s expired it once).
    daemon = Daemon(tmp_path / "m", licenses, admin_tokens=[{"token": manage, "role": "manage", "name": "ops"}],
                    lease_ttl_ms=30_000).start()
    try:
        pbx = MasterClient([daemon.master], "pbx1")
        await pbx.connect()
        await pbx.checkout("port", "alice")
        await pbx.checkout("port", "bob")
        await pbx.assign("ann", ["App(phone)"])
        url = ["--url", str(daemon.http), "--token", manage]
        held = run("status", "--node", "pbx1", *url)
        assert held.returncode == 0 and "alice" in held.stdout and "bob" in held.stdout and "PBX-Port" in held.stdout, held.stderr
        users = run("status", "--users", *url)
        assert users.returncode == 0 and "ann" in users.stdout and "App(phone)" in users.stdout
        released = run("release", "pbx1", "--holder", "bob", *url)
        assert released.returncode == 0 and "released port of bob" in released.stdout, released.stderr
        lost = await next_event(pbx, "lost")
        assert (lost["holder"], lost["error"]) == ("bob", "revoked") and ("port", "bob") not in pbx.leases
        taken = run("unassign", "ann", "App(phone)", *url)
        assert taken.returncode == 0 and "App(phone) V13 taken back, by ops" in taken.stdout, taken.stderr
        nobody = run("unassign", "ann", "App(phone)", *url)
        assert nobody.returncode == 1 and "404 unknown_assignment" in nobody.stderr and "Traceback" not in nobody.stderr
        await pbx.close()
    finally:
        daemon.stop()


# ---------------------------------------------------------------- reload and standby cover (issue 23)

COVERED = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "PBX-Standby13"\ncount = 3\n'
MORE_PORTS = '[[license]]\ntype = "PBX-Port13"\ncount = 5\n[[license]]\ntype = "PBX-Standby13"\ncount = 3\n'


async def test_reload_refuses_to_take_a_connected_standbys_cover_away_unless_forced_and_prints_the_warnings(
        tmp_path: Path) -> None:
    import asyncio

    from licmaster.client import LicenseError, MasterClient

    from .daemon import Daemon

    daemon = Daemon(tmp_path / "m", COVERED).start()
    try:
        data = str(tmp_path / "m" / "data")
        hq = MasterClient([daemon.master], "hq")
        standby = MasterClient([daemon.master], "hq-standby", role="standby", standby_for="hq")
        await hq.connect()
        await standby.connect()
        daemon.license_file.write_text(MORE_PORTS)  # more Ports, the Standby licenses forgotten
        refused = await asyncio.to_thread(run, "reload", "--data-dir", data)
        assert refused.returncode == 1 and "REFUSED" in refused.stderr, refused.stdout + refused.stderr
        assert "hq-standby (for hq) could no longer take over" in refused.stderr
        assert "3 usable Standby for 5 Port (R-STBY-2)" in refused.stderr and "licmaster reload --force" in refused.stderr
        forced = await asyncio.to_thread(run, "reload", "--data-dir", data, "--force")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        lines = forced.stdout.splitlines()
        assert lines[0] == "reloaded: PBX-Port 3->5"
        assert any("warning: the standby function is not available" in line and "3 usable Standby for 5 Port" in line
                   and line.endswith("[R-STBY-2]") for line in lines)
        assert any(line.strip().startswith("FORCED:") for line in lines)
        with pytest.raises(LicenseError, match=r"^standby_unlicensed: .*3 usable Standby for 5 Port \(R-STBY-2\)$"):
            await standby.takeover("hq")  # what it warned of
        await hq.close()
        await standby.close()
    finally:
        daemon.stop()
    assert "event=reload_warning" in daemon.log and "event=standby_cover_lost" in daemon.log


def test_reload_prints_the_outcome_of_its_own_reload_not_the_refusal_just_before(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import signal
    import time

    from licmaster.cli import main
    from licmaster.daemon.journal import read_journal

    from .daemon import Daemon

    # A journal written every 300 ms: the refusal just before is in it, this reload's row not yet.
    daemon = Daemon(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 3\n', journal_flush_ms=300).start()
    try:
        data = tmp_path / "m" / "data"
        daemon.license_file.write_text('[[license]]\ntype = "PBX-Nonsense"\ncount = 5\n')
        daemon.signal(signal.SIGHUP)  # someone else's reload, refused
        for _ in range(1000):
            if read_journal(data / "journal.sqlite3", event="reload_refused"):
                break
            time.sleep(0.01)
        daemon.license_file.write_text('[[license]]\ntype = "PBX-Port13"\ncount = 5\n')
        capsys.readouterr()
        status = main(["reload", "--data-dir", str(data)])
        out = capsys.readouterr()
        assert status == 0 and out.out.startswith("reloaded: PBX-Port 3->5"), out
        assert "REFUSED" not in out.err
    finally:
        daemon.stop()
