"""`slave-sim replay`: a master's recorded demand played by simulated PBXs against a real master.

- timeline.py: pure. Journal rows in, a timeline of what the PBXs did out (asks, leaves,
  assignments, takeovers, losses), cut into steps compressed by the speed; the bad-input checks;
  the comparison of the replay's outcomes with the record's.
- run.py: the glue. Finds the record and its master's config, builds a Scenario whose steps carry
  the timeline, and plays it through the drill runner (its checks, its reports).

Nothing is imported here: `slave-sim` loads this package only for `replay` (it reads the
daemon's journal and config, which the rest of the simulator never imports: tests/test_layers.py).
"""
