"""Every console script's ``--help``: it names its own program, in plain text, and a reader that goes
away (``--help | head``) ends it quietly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deeprun.exit_codes import ExitCode
from helpers.commands import invoke

#: console script -> its entry point in deeprun.commands.entry
PROGRAMS = {
    "deeprun": "deeprun",
    "deeprun-tune": "deeprun_tune",
    "deeprun-lr-finder": "deeprun_lr_finder",
    "deeprun-signal": "deeprun_signal",
    "deeprun-eval": "deeprun_eval",
    "deeprun-export": "deeprun_export",
    "deeprun-prune": "deeprun_prune",
    "deeprun-report": "deeprun_report",
}


def _help(entry: str, stdout) -> subprocess.CompletedProcess:
    script = f"import sys; sys.argv[0] = {entry!r}; from deeprun.commands.entry import {entry}; {entry}()"
    return subprocess.run(
        [sys.executable, "-c", script, "--help"], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120
    )


@pytest.mark.parametrize("program", PROGRAMS)
def test_help_names_its_program_in_plain_text(program, tmp_path):
    from deeprun.commands import entry

    result = invoke(getattr(entry, PROGRAMS[program]), "--help", cwd=tmp_path, program=program)
    assert result.returncode == 0, result.stderr
    usage = [line for line in result.stdout.splitlines() if "sage:" in line]
    assert usage and usage[0].split(":", 1)[1].split()[0] == program, usage
    assert "``" not in result.stdout  # reST markup is for the API docs, not the terminal
    assert "spec" not in result.stdout.lower()  # the spec is the developers' document, not the user's


@pytest.mark.parametrize("program", ["deeprun-eval", "deeprun-tune"])  # a folder command, a Hydra one
def test_help_into_a_closed_pipe_ends_quietly(program):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write fails with EPIPE
    with os.fdopen(write, "w") as stdout:
        result = _help(PROGRAMS[program], stdout)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
    assert result.returncode in (ExitCode.OK, ExitCode.BROKEN_PIPE)
