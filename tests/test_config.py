"""The master's TOML configuration: defaults, every key checked, the key named when wrong."""

from pathlib import Path

import pytest

from licmaster.daemon.config import Config, ConfigError, config_from_dict, load_config


def test_no_config_file_gives_every_default() -> None:
    config = load_config(None)
    assert config == Config()
    assert config.listen_address == ("127.0.0.1", 4460)
    assert config.effective_grace_ms == config.lease_ttl_ms == 3000
    assert config.peers == () and config.journal_keep_days == 90


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "licmaster.toml").write_text('data_dir = "data"\nlicenses = ["a.toml", "b.toml"]\n')
    config = load_config(tmp_path / "licmaster.toml")
    assert config.data_dir == tmp_path / "data"
    assert config.licenses == (tmp_path / "a.toml", tmp_path / "b.toml")


def test_command_line_overrides_win(tmp_path: Path) -> None:
    (tmp_path / "licmaster.toml").write_text('listen = "127.0.0.1:5000"\n')
    assert load_config(tmp_path / "licmaster.toml", listen="127.0.0.1:6000", data_dir=None).listen == "127.0.0.1:6000"


def test_peers_are_addresses() -> None:
    config = config_from_dict({"peers": ["10.0.0.2:4460", "[::1]:4460"]}, Path("."))
    assert config.peers == ("10.0.0.2:4460", "[::1]:4460")


@pytest.mark.parametrize("raw, names", [
    ({"peers": "10.0.0.2:4460"}, "peers"),
    ({"peers": ["10.0.0.2"]}, "peers"),
    ({"peers": [4460]}, "peers"),
    ({"standby_of": "nowhere"}, "standby_of"),
    ({"listen": "127.0.0.1:99999"}, "listen"),
    ({"lease_ttl_ms": 5}, "lease_ttl_ms"),
    ({"journal_keep_days": -1}, "journal_keep_days"),
    ({"max_frame": "big"}, "max_frame"),
    ({"fsync": "yes"}, "fsync"),
    ({"log_level": "loud"}, "log_level"),
    ({"tls_cert": "cert.pem"}, "tls_cert"),
    ({"tls_ca": "ca.pem"}, "tls_ca"),
    ({"heartbeat_ms": 3000, "lease_ttl_ms": 3000}, "heartbeat_ms"),
    ({"hold_s": 2}, "hold_s"),  # below the lease TTL (3 s): a PBX would lose its licenses before it is absent
    ({"hold_s": 30 * 86_400 + 1}, "hold_s"),
    ({"hold_s": "72h"}, "hold_s"),
    ({"hold_s": float("nan")}, "hold_s"),
    ({"listne": "127.0.0.1:1"}, "listne"),
])
def test_a_wrong_value_names_its_key(raw: dict, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        config_from_dict(raw, Path("."))


def test_an_unreadable_or_broken_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("listen = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "broken.toml")


def test_every_problem_of_a_config_is_listed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "licmaster.toml"
    path.write_text('listen = "nowhere"\nmax_frame = "big"\nlog_level = "loud"\nheartbeat_ms = 5000\nlease_ttl_ms = 3000\n'
                    'colour = "blue"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    said = str(raised.value)
    for key in ("unknown config key(s): colour", "max_frame", "log_level"):
        assert key in said, said
    assert said.count("\n") == 2  # three problems, one a line (the cross-key ones come once the keys are sound)


def test_the_checks_across_keys_are_listed_together_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_dict({"listen": "nowhere", "tls_cert": "c.pem", "heartbeat_ms": 5000, "lease_ttl_ms": 3000}, tmp_path)
    said = str(raised.value).splitlines()
    assert len(said) == 3 and said[0].startswith("listen") and "tls_key" in said[1] and "heartbeat_ms" in said[2]


def test_metrics_token_and_metrics_public_are_checked_and_exclude_each_other() -> None:
    assert config_from_dict({"metrics_token": "scrape-token-0123456789"}, Path(".")).metrics_token == "scrape-token-0123456789"
    assert config_from_dict({"metrics_public": True}, Path(".")).metrics_public is True
    with pytest.raises(ConfigError, match="metrics_token: expected a secret of at least 16"):
        config_from_dict({"metrics_token": "short"}, Path("."))
    with pytest.raises(ConfigError, match="metrics_public: expected true or false"):
        config_from_dict({"metrics_public": "yes"}, Path("."))
    with pytest.raises(ConfigError, match="metrics_token and metrics_public: set one"):
        config_from_dict({"metrics_token": "scrape-token-0123456789", "metrics_public": True}, Path("."))


def test_the_hold_is_72_hours_by_default_and_may_be_from_the_ttl_to_30_days() -> None:
    assert config_from_dict({}, Path(".")).hold_s == 259_200
    assert config_from_dict({"hold_s": 3}, Path(".")).hold_s == 3
    assert config_from_dict({"lease_ttl_ms": 600, "heartbeat_ms": 100, "hold_s": 0.6}, Path(".")).hold_s == 0.6
    assert config_from_dict({"hold_s": 30 * 86_400}, Path(".")).hold_s == 2_592_000
