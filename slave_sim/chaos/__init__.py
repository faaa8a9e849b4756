"""The chaos drill (`slave-sim chaos`): faults nobody scripted, drawn from a seed.

    faults.py   one frozen dataclass per kind of fault, with its inject/heal pair
    plan.py     the configuration, and every fault and heal of a run drawn from the seed (pure)
    runner.py   the installation (etcd, two masters, sites of PBXs behind proxies), the workload,
                the nemesis that carries the plan out, the audits
    check.py    the recorded history held to the drill's rules (pure)
    report.py   the verdict: terminal, JSON, HTML
"""
