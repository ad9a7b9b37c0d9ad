"""The console scripts' entry points (``[project.scripts]``). Each installs the stop signals' handlers
first and imports its command after (JAX and Hydra take a second to import), so Ctrl-C or SIGTERM at any
moment ends it with one line and exit 130 or 143, never a traceback."""

from __future__ import annotations

import importlib
import os
import sys

from deeprun.commands.common import JOB, exit_interrupted, interrupt_at_once
from deeprun.exit_codes import ExitCode


def _main(command: str, program: str) -> None:
    interrupt_at_once()
    try:
        status = importlib.import_module(f"deeprun.commands.{command}").main()
        sys.stdout.flush()  # here, where a closed pipe can still be handled (not at the interpreter's exit)
        if isinstance(status, int):  # a command that returns its exit status (deeprun-report)
            sys.exit(status)
    except KeyboardInterrupt as error:  # while importing: nothing was made yet
        exit_interrupted(program, error)
    except BrokenPipeError:  # the reader went away (`deeprun-eval --help | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        sys.exit(ExitCode.BROKEN_PIPE)
    except SystemExit as exit_:
        if JOB.stuck_writers:
            # A failed checkpoint write leaves orbax's writer threads stuck on the full or read-only disk;
            # the interpreter's shutdown would wait for them or print their tracebacks after the one line.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exit_.code if isinstance(exit_.code, int) else 1)
        raise


def deeprun() -> None:
    _main("run", "deeprun")


def deeprun_report() -> None:
    _main("report", "deeprun-report")


def deeprun_eval() -> None:
    _main("evaluate", "deeprun-eval")


def deeprun_lr_finder() -> None:
    _main("lr_finder", "deeprun-lr-finder")


def deeprun_signal() -> None:
    _main("signal", "deeprun-signal")


def deeprun_prune() -> None:
    _main("prune", "deeprun-prune")


def deeprun_export() -> None:
    _main("export", "deeprun-export")


def deeprun_list() -> None:
    _main("catalog", "deeprun-list")


def deeprun_tune() -> None:
    _main("tune", "deeprun-tune")
