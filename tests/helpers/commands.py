"""Running deeprun's commands: in a new process (what a user does) or in this one (faster, for behaviour
that needs no new process: argument handling, validation, error lines, exit codes)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

TIMEOUT_S = 600


def run_command(
    *args: str,
    cwd: Path,
    module: str = "deeprun.commands.run",
    env: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS...`` in ``cwd`` (``module``: ``deeprun.commands.<command>``), output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def deeprun(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """The ``deeprun`` command in a new process."""
    return run_command(*args, cwd=cwd, **kwargs)


def _restore_logging(loggers: dict, root_handlers: list, root_level: int) -> None:
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and (name not in loggers or logger.handlers):
            logger.handlers.clear()
            logger.propagate = True
            logger.disabled = False
    logging.root.handlers[:] = root_handlers
    logging.root.setLevel(root_level)


@dataclass
class Result:
    """What a command run in this process left: its exit status and output (as ``CompletedProcess``)."""

    returncode: int
    stdout: str
    stderr: str


def invoke(main: Callable[[], object], *args: str, cwd: Path, program: str = "deeprun") -> Result:
    """Run a command's ``main()`` in this process with ``sys.argv = [program, *args]`` in ``cwd``;
    ``SystemExit`` becomes the return code. Hydra's global state, the environment and the working
    directory are restored afterwards."""
    from hydra.core.global_hydra import GlobalHydra

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_env, saved_cwd = sys.argv, dict(os.environ), os.getcwd()
    # Hydra configures logging for the job (handlers writing to this call's redirected streams): undo it.
    saved_logging = logging.root.manager.loggerDict.copy(), logging.root.handlers[:], logging.root.level
    code = 0
    try:
        sys.argv = [program, *args]
        os.chdir(cwd)
        # Hydra's logging.config.dictConfig would close every existing handler, pytest's own included.
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            mock.patch.object(logging, "shutdown", lambda *handlers: None),
        ):
            try:
                main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        GlobalHydra.instance().clear()
        _restore_logging(*saved_logging)
    return Result(code, out.getvalue(), err.getvalue())
