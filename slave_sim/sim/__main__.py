"""`python -m slave_sim.sim --seed N ...`: `slave-sim sim` (the same options and output)."""

from __future__ import annotations

import argparse
import sys

from .command import add_arguments, main

parser = argparse.ArgumentParser(prog="python -m slave_sim.sim", description=__doc__)
add_arguments(parser)
sys.exit(main(parser.parse_args()))
