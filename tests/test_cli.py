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
    from licmaster.daemon.storage.journal import Journal

    day = 1_764_000_000 // 86400 * 86400  # 2025-11-24T00:00Z
    journal = Journal(tmp_path / "data" / "journal.sqlite3")
    for row in [(day + 1, "start"), *[(day + 2 + n, "grant", "hq", "port", f"u{n}", f"{day}.a.{n}", "PBX-Port13:1") for n in range(3)],
                     (day + 60, "takeover", "hq-spare", None, None, None, "hq"), (day + 70, "checkin", "hq-spare", "port", "u0", f"{day}.a.0"),
                     (day + 80, "bye", "hq-spare"), *[(day + 90 + n, "grant", "hq", "port", f"u{n}", f"{day}.b.{n}", "PBX-Port13:1") for n in range(3)],
                     (day + 120, "stop")]:
        journal.rows.append(row)
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
    from licmaster.daemon.storage.journal import read_journal

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


def test_check_with_a_refused_policy_does_not_say_ok(tmp_path: Path) -> None:
    licenses = tmp_path / "licenses.toml"
    licenses.write_text('[[license]]\ntype = "PBX-Port13"\ncount = 10\n')
    policy = tmp_path / "sites.toml"
    policy.write_text('[site.hq]\nnodes = ["hq"]\nreserve = { "PBX-Port" = 50 }\n')  # more than installed
    out = run("check", str(licenses), "--policy", str(policy))
    assert out.returncode == 1 and "Sites (" in out.stdout and "REFUSED" in out.stdout, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "OK" not in lines  # it printed OK, then "Sites: REFUSED"
    assert lines[-1].endswith("; the site policy: 1 error(s)") and lines[-1].startswith("0 error(s)"), lines[-1]
    as_json = json.loads(run("check", str(licenses), "--policy", str(policy), "--json").stdout)
    assert as_json["ok"] is False and as_json["sites"]["ok"] is False
    policy.write_text('[site.hq]\nnodes = ["hq"]\nreserve = { "PBX-Port" = 5 }\n')
    good = run("check", str(licenses), "--policy", str(policy))
    assert good.returncode == 0 and good.stdout.splitlines()[-1] == "OK", good.stdout  # the verdict last, after the sites


def test_serve_without_license_files_warns_where_it_is_seen(tmp_path: Path) -> None:
    from licmaster.testing import MasterProcess

    from .daemon import FAST

    master = MasterProcess(tmp_path / "m", {**FAST, "licenses": []}).start()
    try:
        log = master.log
    finally:
        master.stop()
    assert "level=warning event=no_license_files" in log  # was level=info
    assert "licmaster: WARNING: no license files: the pool is EMPTY and every checkout is refused" in log
    assert log.index("licmaster: WARNING: no license files") > log.index("licmaster: serving PBXs")  # said last


async def test_the_journal_prints_a_count_with_its_unit(tmp_path: Path) -> None:
    from licmaster.daemon.storage.journal import Journal, read_journal

    journal = Journal(tmp_path / "data" / "journal.sqlite3")
    for row in [(1_764_000_000.0, "bye", "hq", None, None, None, "28"), (1_764_000_001.0, "expire", "branch", None, None, None, "1"),
                (1_764_000_002.0, "assign", "hq", "PBX-UC", "alice", None, "13"),
                (1_764_000_003.0, "bye", "stuck", None, None, None, "released by alice")]:
        journal.rows.append(row)
    await journal.close()
    out = run("journal", "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].endswith("bye       node=hq detail=28 leases"), lines
    assert lines[1].endswith("expire    node=branch detail=1 lease")
    assert lines[2].endswith("assign    node=hq resource=PBX-UC holder=alice detail=V13")
    assert lines[3].endswith("bye       node=stuck detail=released by alice")
    assert [r["detail"] for r in read_journal(tmp_path / "data" / "journal.sqlite3")] == ["28", "1", "13", "released by alice"]
    assert json.loads(run("journal", "--data-dir", str(tmp_path / "data"), "--json").stdout.splitlines()[0])["detail"] == "28"


# ---------------------------------------------------------------- the CLI finds its master (issue 23, items 6 and 7)

def run_in(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The CLI from another directory than the master's, with these variables (and none of ours)."""
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("LICMASTER_")}
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "licmaster.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**clean, "PYTHONPATH": pythonpath, **env}, timeout=60)


def one_clear_line(out: subprocess.CompletedProcess, *names: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    for name in names:
        assert name in out.stderr, out.stderr


def test_what_the_cli_cannot_use_is_one_line_naming_it_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    one_clear_line(run_in(tmp_path, "status", "--token-file", "missing"), "--token-file missing", "cannot read")
    one_clear_line(run_in(tmp_path, "status", "--token-file", "empty"), "--token-file empty", "empty")
    one_clear_line(run_in(tmp_path, "release", "pbx1", LICMASTER_TOKEN_FILE=str(tmp_path)), "LICMASTER_TOKEN_FILE", "cannot read")
    one_clear_line(run_in(tmp_path, "status", LICMASTER_URL="ftp://somewhere"), "LICMASTER_URL 'ftp://somewhere'")
    one_clear_line(run_in(tmp_path, "status", LICMASTER_URL="http://host:99999"), "LICMASTER_URL", "not a console address")
    one_clear_line(run_in(tmp_path, "reload", LICMASTER_URL="no such host"), "LICMASTER_URL 'no such host'")
    one_clear_line(run_in(tmp_path, "journal", "--config", "nowhere.toml"), "--config nowhere.toml", "cannot read")
    (tmp_path / "bad.toml").write_text('max_frame = "big"\nheartbeat_ms = 0\n')
    one_clear_line(run_in(tmp_path, "report", LICMASTER_CONFIG="bad.toml"), "LICMASTER_CONFIG bad.toml", "max_frame", "heartbeat_ms")
    (tmp_path / "off.toml").write_text('http = ""\n')
    one_clear_line(run_in(tmp_path, "status", "--config", "off.toml"), "off.toml", "no console")


async def test_the_cli_finds_its_master_by_its_config_or_the_environment_and_says_who_holds_a_family(tmp_path: Path) -> None:
    import asyncio

    from licmaster.client import MasterClient
    from licmaster.testing.process import free_port

    from .daemon import Daemon

    view, manage = "view-token-0123456789", "manage-token-0123456789"
    licenses = '[[license]]\ntype = "PBX-Port13"\ncount = 5\n[[license]]\ntype = "PBX-Operator13"\ncount = 3\n'
    daemon = Daemon(tmp_path / "m", licenses, http=f"127.0.0.1:{free_port()}", lease_ttl_ms=30_000,
                    admin_tokens=[{"token": view, "role": "view"}, {"token": manage, "role": "manage", "name": "ops"}]).start()
    elsewhere = tmp_path / "elsewhere"  # not the master's directory: no ./licmaster-data here
    elsewhere.mkdir()
    config = str(daemon.config_file)
    try:
        hq, branch = MasterClient([daemon.master], "hq"), MasterClient([daemon.master], "branch")
        await hq.connect()
        await branch.connect()
        await hq.checkout("operator", "desk-1")
        await hq.checkout("operator", "desk-2")
        await branch.checkout("operator", "desk-3")
        await hq.checkout("port", "alice")

        def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
            return run_in(elsewhere, *args, **env)

        status = await asyncio.to_thread(cli, "status", "--config", config)  # its http, its view token
        assert status.returncode == 0 and "PBX-Operator" in status.stdout and "hq" in status.stdout, status.stderr
        family = await asyncio.to_thread(cli, "status", "--family", "PBX-Operator", LICMASTER_CONFIG=config)
        assert family.returncode == 0, family.stderr
        lines = family.stdout.splitlines()
        assert lines[0] == "PBX-Operator: 3 of 3 installed in use" and lines[1] == "held by 2 node(s): branch 1, hq 2"
        assert [line.split()[:2] for line in lines[4:]] == [["branch", "desk-3"], ["hq", "desk-1"], ["hq", "desk-2"]]
        as_json = json.loads((await asyncio.to_thread(cli, "status", "--family", "PBX-Operator", "--json", LICMASTER_CONFIG=config)).stdout)
        assert [h["holder"] for h in as_json["held"]] == ["desk-3", "desk-1", "desk-2"]
        unknown = await asyncio.to_thread(cli, "status", "--family", "PBX-Nonsense", LICMASTER_CONFIG=config)
        assert unknown.returncode == 1 and "404 unknown_family" in unknown.stderr

        token_file = tmp_path / "manage.token"
        token_file.write_text(manage + "\n")
        url = f"http://{daemon.http}"
        by_env = await asyncio.to_thread(cli, "release", "hq", "--holder", "desk-2", LICMASTER_URL=url,
                                         LICMASTER_TOKEN_FILE=str(token_file))
        assert by_env.returncode == 0 and "released operator of desk-2" in by_env.stdout and "by ops" in by_env.stdout, by_env.stderr
        view_only = await asyncio.to_thread(cli, "release", "hq", "--holder", "desk-1", "--url", url, LICMASTER_TOKEN=view)
        assert view_only.returncode == 1 and "403 forbidden" in view_only.stderr
        by_config = await asyncio.to_thread(cli, "release", "hq", "--holder", "desk-1", "--config", config)  # its manage token
        assert by_config.returncode == 0 and "released operator of desk-1" in by_config.stdout, by_config.stderr
        reloaded = await asyncio.to_thread(cli, "reload", LICMASTER_CONFIG=config)  # SIGHUP to the master of its data_dir
        assert reloaded.returncode == 0 and reloaded.stdout.startswith("reloaded: nothing changed"), reloaded.stdout + reloaded.stderr
        through_console = await asyncio.to_thread(cli, "reload", "--config", config, "--token-file", str(token_file))
        assert through_console.returncode == 0 and through_console.stdout.startswith("reloaded:"), through_console.stderr
        await hq.close()
        await branch.close()
    finally:
        daemon.stop()
    journal = run_in(elsewhere, "journal", "--event", "operator", LICMASTER_CONFIG=config)  # its data_dir, not ./licmaster-data
    assert journal.returncode == 0 and "release 1 lease(s) of hq by ops" in journal.stdout, journal.stderr
    report = run_in(elsewhere, "report", "--config", config, "--since", "1h", "--json")
    assert report.returncode == 0 and json.loads(report.stdout)["days"], report.stderr
    gone = run_in(elsewhere, "status", "--config", config)
    assert gone.returncode == 1 and f"cannot reach the console at http://{daemon.http} (`http` in {config})" in gone.stderr


def test_tokens_reload_on_sighup_and_a_metrics_token_serves_the_scrape(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    from .daemon import Daemon

    manage, new, scrape = "manage-token-0123456789", "second-manage-token-0123", "scrape-token-0123456789"

    def get(path: str, token: str | None) -> int:
        request = urllib.request.Request(f"http://{daemon.http}{path}", headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    daemon = Daemon(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 3\n',
                    admin_tokens=[{"token": manage, "role": "manage"}]).start()
    data = str(tmp_path / "m" / "data")
    try:
        assert get("/metrics", None) == 401 and get("/metrics", scrape) == 401  # the scrape is down once tokens exist
        daemon.reconfigure(admin_tokens=[{"token": manage, "role": "manage"}, {"token": new, "role": "manage", "name": "bob"}],
                           metrics_token=scrape)
        taken = run_in(tmp_path, "reload", "--data-dir", data)  # SIGHUP: no restart
        assert taken.returncode == 0 and "tokens: bob (manage) added; metrics_token set" in taken.stdout, taken.stdout + taken.stderr
        assert get("/metrics", scrape) == 200 and get("/api/v1/usage", scrape) == 401 and get("/api/v1/usage", new) == 200
        daemon.reconfigure(metrics_token="", metrics_public=True, heartbeat_ms=99_999)  # a bad config: no token changes
        kept = run_in(tmp_path, "reload", "--data-dir", data)
        assert kept.returncode == 1 and "tokens NOT reloaded, the ones in force stay:" in kept.stderr, kept.stdout + kept.stderr
        assert "heartbeat_ms (99999) must be below lease_ttl_ms" in kept.stderr
        assert get("/metrics", scrape) == 200 and get("/metrics", None) == 401 and get("/api/v1/usage", new) == 200
        daemon.reconfigure(heartbeat_ms=200)
        public = run_in(tmp_path, "reload", "--data-dir", data)
        assert public.returncode == 0 and "metrics_token removed; metrics_public true" in public.stdout, public.stdout + public.stderr
        assert get("/metrics", None) == 200 and get("/api/v1/usage", None) == 401
    finally:
        daemon.stop()
    assert "event=tokens_reloaded" in daemon.log and "event=tokens_refused" in daemon.log


def test_a_config_with_tls_is_asked_over_https_verified_with_its_certificate(tmp_path: Path) -> None:
    from licmaster.testing.process import free_port

    from .daemon import Daemon, self_signed_cert

    cert, key = self_signed_cert(tmp_path)
    daemon = Daemon(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 3\n', http=f"0.0.0.0:{free_port()}",
                    tls_cert=str(cert), tls_key=str(key)).start()
    try:
        status = run_in(tmp_path, "status", LICMASTER_CONFIG=str(daemon.config_file))  # a console on every address: loopback
        assert status.returncode == 0 and "PBX-Port" in status.stdout, status.stderr
    finally:
        daemon.stop()
    gone = run_in(tmp_path, "status", LICMASTER_CONFIG=str(daemon.config_file))
    assert gone.returncode == 1 and "cannot reach the console at https://127.0.0.1:" in gone.stderr
