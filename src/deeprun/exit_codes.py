"""deeprun's exit statuses, one set for every command and launcher (the README's "Exit codes")."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED_JOBS = 1  # a sweep in which a job failed or died, after every other job ran and the summary was written
    BAD_INPUT = 2  # one ``deeprun: error:`` line, before anything compiles, nothing written
    DIVERGED = 3  # NaN/inf loss
    INTERRUPTED = 130  # the shell's convention for SIGINT
