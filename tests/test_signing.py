"""Signed license files: bound to installations, refused when altered, unsigned, signed by
another key or bound elsewhere; the canonical form ignores what does not matter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from licmaster.cli import main
from licmaster.daemon.master import StartError
from licmaster.licenses.files import load_files
from licmaster.licenses.signing import SigningError, Verifier, keygen

from .daemon import in_process

MASTER, STANDBY = "00:90:33:aa:00:01", "00:90:33:aa:00:02"
UNSIGNED = '''# the office's licenses
[[license]]
type = "PBX-Port13"
count = 100

[[license]]
type = "PBX-IPVA13"
count = 10
bind = "00:90:33:AA:BB:CC"
'''


@pytest.fixture
def vendor(tmp_path: Path) -> tuple[Path, Path]:
    return keygen(tmp_path / "vendor")


def sign(tmp_path: Path, key: Path, text: str = UNSIGNED, installations: tuple[str, ...] = (MASTER, STANDBY),
         name: str = "signed.toml") -> Path:
    unsigned, signed = tmp_path / f"unsigned-{name}", tmp_path / name
    unsigned.write_text(text)
    args = ["license", "sign", str(unsigned), "--key", str(key), "--out", str(signed)]
    for installation in installations:
        args += ["--installation", installation]
    assert main(args) == 0
    return signed


def refusal(path: Path, pub: Path | list[Path], installation: str = MASTER) -> str | None:
    loaded = load_files([path], verifier=Verifier.from_files(pub if isinstance(pub, list) else [pub], installation))
    return None if loaded.ok else loaded.errors[0].message


def test_a_signed_file_loads_for_each_installation_it_is_bound_to(tmp_path: Path, vendor: tuple[Path, Path]) -> None:
    key, pub = vendor
    signed = sign(tmp_path, key)
    for installation in (MASTER, STANDBY):
        assert refusal(signed, pub, installation) is None
    loaded = load_files([signed], verifier=Verifier.from_files([pub], MASTER))
    assert sum(lic.count for lic in loaded.licenses) == 110
    assert "# the office's licenses" in signed.read_text()  # still a readable license file


def test_a_changed_count_or_a_removed_entry_is_refused(tmp_path: Path, vendor: tuple[Path, Path]) -> None:
    key, pub = vendor
    signed = sign(tmp_path, key)
    text = signed.read_text()
    signed.write_text(text.replace("count = 100", "count = 1000"))
    assert "changed after it was signed" in (refusal(signed, pub) or "")
    start = text.index("[[license]]\ntype = \"PBX-IPVA13\"")
    signed.write_text(text[:start] + text[text.index("\n[signature]"):])
    assert "changed after it was signed" in (refusal(signed, pub) or "")
    signed.write_text(text.replace("00:90:33:AA:BB:CC", "00:90:33:AA:BB:CD"))  # another device
    assert "changed after it was signed" in (refusal(signed, pub) or "")


def test_reordered_entries_comments_and_spelling_that_do_not_matter_stay_valid(tmp_path: Path, vendor: tuple[Path, Path]) -> None:
    key, pub = vendor
    signed = sign(tmp_path, key)
    text = signed.read_text()
    port = text[text.index("[[license]]\ntype = \"PBX-Port13\""):text.index("[[license]]\ntype = \"PBX-IPVA13\"")]
    ipva = text[text.index("[[license]]\ntype = \"PBX-IPVA13\""):text.index("\n[signature]")]
    signature = text[text.index("\n[signature]"):]
    reordered = "# another comment\n" + ipva.replace("00:90:33:AA:BB:CC", "00:90:33:aa:bb:cc") + "\n\n" + port + signature
    signed.write_text(reordered)
    assert refusal(signed, pub) is None


def test_another_key_another_installation_and_unsigned_files_are_refused(tmp_path: Path, vendor: tuple[Path, Path]) -> None:
    key, pub = vendor
    _, other_pub = keygen(tmp_path / "other")
    signed = sign(tmp_path, key)
    assert "not one of the vendor keys" in (refusal(signed, other_pub) or "")
    assert f"not to this one ({'00:90:33:aa:00:09'})" in (refusal(signed, pub, "00:90:33:aa:00:09") or "")
    unsigned = tmp_path / "plain.toml"
    unsigned.write_text(UNSIGNED)
    assert (refusal(unsigned, pub) or "").startswith("license file refused: unsigned")


def test_two_vendor_keys_let_a_vendor_rotate_its_key(tmp_path: Path, vendor: tuple[Path, Path]) -> None:
    old_key, old_pub = vendor
    new_key, new_pub = keygen(tmp_path / "vendor-2027")
    both = [old_pub, new_pub]
    assert refusal(sign(tmp_path, old_key, name="old.toml"), both) is None
    assert refusal(sign(tmp_path, new_key, name="new.toml"), both) is None


def test_keygen_never_overwrites_and_sign_refuses_a_broken_file(tmp_path: Path, vendor: tuple[Path, Path]) -> None:
    key, _ = vendor
    with pytest.raises(SigningError, match="not overwritten"):
        keygen(tmp_path / "vendor")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    broken = tmp_path / "broken.toml"
    broken.write_text('[[license]]\ntype = "PBX-Port13"\ncount = 0\n')
    assert main(["license", "sign", str(broken), "--key", str(key), "--installation", MASTER, "--out", str(tmp_path / "x")]) == 1


def test_check_verifies_signatures_with_vendor_keys(tmp_path: Path, vendor: tuple[Path, Path], capsys) -> None:
    key, pub = vendor
    signed = sign(tmp_path, key)
    assert main(["check", str(signed), "--vendor-key", str(pub), "--installation", MASTER]) == 0
    assert main(["check", str(signed), "--vendor-key", str(pub), "--installation", "00:90:33:aa:00:09"]) == 1
    assert "not to this one" in capsys.readouterr().out


def test_id_prints_the_configured_hardware_id_or_the_hosts_mac(tmp_path: Path, capsys) -> None:
    config = tmp_path / "licmaster.toml"
    config.write_text('hardware_id = "office-master-1"\n')
    assert main(["id", "--config", str(config)]) == 0 and capsys.readouterr().out.strip() == "office-master-1"
    assert main(["id"]) == 0
    printed = capsys.readouterr().out.strip()
    assert len(printed.split(":")) == 6


async def test_a_master_with_vendor_keys_refuses_unsigned_files_at_start_and_a_bad_reload(tmp_path: Path,
                                                                                           vendor: tuple[Path, Path]) -> None:
    key, pub = vendor
    with pytest.raises(StartError, match="unsigned"):
        await in_process(tmp_path / "plain", UNSIGNED, vendor_keys=[str(pub)], hardware_id=MASTER)
    signed_text = sign(tmp_path, key).read_text()
    d = await in_process(tmp_path / "m", signed_text, vendor_keys=[str(pub)], hardware_id=MASTER)
    try:
        assert d.master is not None
        ports = lambda: sum(b.installed for b in d.master.pool.buckets() if b.family == "PBX-Port")  # noqa: E731
        assert ports() == 100
        d.license_file.write_text(signed_text.replace("count = 100", "count = 5000"))  # edited by hand
        assert d.master.reload() is None and ports() == 100  # refused whole: nothing changed
        await asyncio.sleep(0.05)
    finally:
        await d.stop()
    with pytest.raises(StartError, match="not to this one"):
        await in_process(tmp_path / "elsewhere", signed_text, vendor_keys=[str(pub)], hardware_id="00:90:33:aa:00:09")


def test_the_shipped_signed_example_verifies_with_the_demo_key() -> None:
    examples = Path(__file__).resolve().parent.parent / "examples"
    verifier = Verifier.from_files([examples / "demo-vendor.pub"], "00:90:33:de:00:02")
    assert load_files([examples / "office-signed.toml"], verifier=verifier).ok


async def test_without_vendor_keys_unsigned_files_load_and_the_master_says_they_are_unverified(tmp_path: Path, caplog) -> None:
    caplog.set_level("WARNING", logger="licmaster")
    d = await in_process(tmp_path / "m", UNSIGNED)
    try:
        assert d.master is not None and sum(lic.count for lic in d.master.pool.installed) == 110
        assert [r.getMessage() for r in caplog.records if r.getMessage() == "licenses_unverified"]
    finally:
        await d.stop()
