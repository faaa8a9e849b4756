"""What both commands (`licmaster`, `slave-sim`) do the same at the terminal. Imports nothing of
the project."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def run_quietly_into_a_pipe(run: Callable[[], int]) -> int:
    """The command's exit status; a reader that stops reading (`| head`) ends it quietly, as it
    would a Unix tool, not with a BrokenPipeError traceback."""
    try:
        status = run()
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 0
