"""`slave-sim sim` (slave_sim/sim.py): the real masters and clients on one virtual clock, faults from
the seed, checked; the same seed gives the same history, and it finds a hole that was fixed."""

from __future__ import annotations

import pytest

from licmaster.daemon.master import Master
from slave_sim.sim import SimConfig, run_sim


def test_the_same_seed_gives_the_same_history_byte_for_byte_and_another_seed_another() -> None:
    first = run_sim(SimConfig(seed=3, hours=0.5, fault_every_s=120))
    again = run_sim(SimConfig(seed=3, hours=0.5, fault_every_s=120))
    other = run_sim(SimConfig(seed=4, hours=0.5, fault_every_s=120))
    assert first.history == again.history and first.history_sha256 == again.history_sha256
    assert other.history_sha256 != first.history_sha256
    assert first.passed and first.faults and first.simulated_s >= 1800


def test_undoing_adoption_at_a_takeover_is_found_as_more_believed_than_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Proven able to fail: a new master that counts nothing it did not see re-synced (the hole the
    # two clocks' adoption closes). Seed 2 finds it 2.96 simulated hours in; the product passes it.
    monkeypatch.setattr(Master, "adopt", lambda self, holdings: None)
    broken = run_sim(SimConfig(seed=2, hours=4, fault_every_s=300))
    assert not broken.passed and any("the PBXs may use 61 Ports, 60 installed" in v for v in broken.safety), broken.safety
    assert broken.to_dict()["replay"] == "slave-sim sim --seed 2 --hours 4 --pbxs 10 --phones 14 --ports 60 --fault-every 300"


@pytest.mark.parametrize(("option", "value"), [("seed", -1), ("hours", 0), ("pbxs", 51), ("phones", 0), ("ports", 0),
                                               ("fault_every_s", 1)])
def test_a_seed_or_an_option_out_of_range_is_named(option: str, value: float) -> None:
    config = SimConfig(**{"seed": 1, option: value})  # type: ignore[arg-type]
    assert any(option.split("_")[0].replace("fault", "fault-every") in problem for problem in config.problems())


def test_the_simulated_masters_draw_lease_tags_from_the_models_range() -> None:
    from licmaster.model.leases import LEASE_TAGS
    from licmaster.testing import simmaster

    assert simmaster.LEASE_TAGS == LEASE_TAGS


def test_with_the_leadership_in_a_model_of_etcd_quorum_losses_and_kills_hold_and_replay_the_same() -> None:
    config = SimConfig(seed=5, hours=1, fault_every_s=120, etcd=True)
    first, again = run_sim(config), run_sim(config)
    assert first.passed and first.history_sha256 == again.history_sha256
    kinds = {kind for _, kind, _ in first.faults}
    assert "quorum-lost" in kinds and "kill-master" in kinds
    assert first.to_dict()["replay"].endswith("--etcd")
