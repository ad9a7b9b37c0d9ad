"""deeprun's exit statuses, one set for every command and launcher (the README's "Exit codes")."""

from __future__ import annotations

import enum
import signal


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1  # a run that could not go on (e.g. its folder became unwritable), or a sweep in which a job did
    BAD_INPUT = 2  # one ``deeprun: error:`` line, before anything compiles, nothing written
    DIVERGED = 3  # NaN/inf loss
    INTERRUPTED = 130  # the shell's convention for SIGINT (128 + 2)
    TERMINATED = 143  # SIGTERM (128 + 15): what Slurm, Kubernetes and `timeout` send
    BROKEN_PIPE = 141  # SIGPIPE (128 + 13): the reader of stdout went away (`deeprun-eval --help | head`)


def for_signal(signum: int) -> ExitCode:
    """The status of a run stopped by ``signum`` (SIGINT or SIGTERM)."""
    return ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED
