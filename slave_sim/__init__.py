"""slave_sim: a simulated PBX network around a licmaster, and two drills.

    drill/       the scenario drill: a scripted timeline (`slave-sim run`)
    chaos/       the chaos drill: faults drawn from a seed (`slave-sim chaos`)
    access.py    how the simulator's clients reach a secured master (TLS, token)
    availability.py  the devices that lost service because of licensing (lapsed, lost), both drills
    masters.py   what several masters count together (an adopted lease on two books is one)
    proxy.py     the TCP links a drill cuts and heals
    reports.py   the JSON and HTML pair both drills write
    cli.py       the `slave-sim` command
"""
