"""The scenario drill (`slave-sim run SCENARIO`): a simulated PBX network around a master, driven
by a scripted timeline.

    scenario.py        the scenario file (TOML), validated (pure)
    actions.py         the timeline's actions, one row each (pure)
    runner.py          the run: its masters, the timeline, the verdict; the run's actions
    network.py         the PBXs of one process; the PBX actions
    workers.py         --workers N: a Network per process, driven over a pipe
    pbx.py             a simulated PBX: its objects (objects.py) and its client (sim_client.py)
    auditor.py         watches the masters' usage; compares it with what the network believes
    metrics.py         what a run records
    master_process.py  the run's own master; own_master.py: --master, someone else's
    report.py          the verdict: terminal, JSON, HTML
"""
