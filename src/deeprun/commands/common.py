"""What every command shares: one-line errors and exit codes, the Hydra front, process setup.

Only commands print errors or exit; the layers below raise :class:`~deeprun.registry.ConfigError` (bad
input) or return statuses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from deeprun.exit_codes import ExitCode
from deeprun.registry import ConfigError, options_from_tokens
from deeprun.training.loop import StopRequest

T = TypeVar("T")


def fail(message: str, run_dir: Path | None = None, program: str = "deeprun") -> NoReturn:
    """Print one error line and exit 2; remove the run folder Hydra made if nothing else is in it."""
    print(f"{program}: error: {message}", file=sys.stderr)
    if run_dir is not None:
        discard_if_empty(run_dir)
    sys.exit(ExitCode.BAD_INPUT)


def discard_if_empty(run_dir: Path) -> None:
    """Remove a folder Hydra made if it holds nothing but Hydra's own ``.hydra/``."""
    if run_dir.exists() and {p.name for p in run_dir.iterdir()} <= {".hydra"}:
        shutil.rmtree(run_dir, ignore_errors=True)


def quiet_launcher_schema_warning() -> None:
    """Hydra 1.3 checks ``conf/hydra/launcher/{joblib,submitit_local,submitit_slurm}.yaml`` against the
    plugins' configs of the same names and warns at every composition that this check is deprecated.
    deeprun's presets write out every field, so they work the same once the check is gone: the
    warning says nothing to a user, and is silenced for these three files only."""
    warnings.filterwarnings(
        "ignore",
        message=r"\s*'hydra/launcher/(joblib|submitit_local|submitit_slurm)' is validated against "
        "ConfigStore schema",
        category=UserWarning,
    )


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[StopRequest]:
    """While training, the first SIGINT asks for a clean stop at the end of the epoch; a second one
    interrupts at once (Python's default). Outside the main thread there is no handler."""
    stop = StopRequest()

    def request_stop(signum: int, frame: Any) -> None:
        stop.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = signal.signal(signal.SIGINT, request_stop)
    except ValueError:
        yield stop
        return
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def run_hydra_app(app: Callable[[], Any], program: str) -> None:
    """Run a ``@hydra.main`` app. Errors Hydra finds before a job starts (an unknown option, a malformed
    override, an output folder it cannot create) end like deeprun's own: one ``PROGRAM: error:`` line,
    exit 2. ``job_started`` (set by the app once Hydra hands it a job) tells later OSErrors apart."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    quiet_launcher_schema_warning()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors here instead of printing them itself
    JOB.started = False
    try:
        app()
    except MissingConfigException as error:
        fail(missing_option_message(error), program=program)
    except (HydraException, OmegaConfBaseException) as error:
        fail(unknown_key_message(error.__cause__) or one_line(str(error)), program=program)
    except OSError as error:
        if JOB.started:
            raise
        fail(f"cannot create the output folder: {error}", program=program)


class JOB:
    """Whether Hydra has handed this process a job (set by each app's first line)."""

    started = False


def missing_option_message(error: Any) -> str:
    """``optimizer=foo`` → "optimizer=foo: no such option; valid: adagrad, adam, ..." ."""
    group, _, option = (error.missing_cfg_file or "").rpartition("/")
    if group and error.options:
        return f"{group}={option}: no such option; valid: {', '.join(sorted(error.options))}"
    return one_line(str(error))


def unknown_key_message(cause: BaseException | None) -> str | None:
    """``trainer.nonexist=3`` → "trainer.nonexist: no such field; valid: epochs, ..." (None: another error)."""
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    parent = getattr(cause, "parent_node", None)
    if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or not isinstance(parent, DictConfig):
        return None
    if not cause.full_key:
        return None
    return f"{cause.full_key}: no such field; valid: {', '.join(sorted(str(k) for k in parent))}"


def one_line(message: str) -> str:
    """Hydra's multi-line messages as one line, without its hint about HYDRA_FULL_ERROR."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(line for line in lines if "HYDRA_FULL_ERROR" not in line)


def run_folder_command(
    program: str, usage: str, options_cls: type[T], action: Callable[[Path, T], Any], argv: Sequence[str] | None = None
) -> Any:
    """The front of the commands that work on a finished run (``deeprun-eval``, ``-prune``, ``-export``):
    ``PROGRAM RUN_DIR key=value ...``. ``-h``/``--help`` prints ``usage``; bad input (a ConfigError) ends
    with one ``PROGRAM: error:`` line and exit 2. Returns ``action(run_dir, options)``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage)
        sys.exit(ExitCode.OK if args else ExitCode.BAD_INPUT)
    try:
        return action(Path(args[0]), options_from_tokens(options_cls, args[1:]))
    except ConfigError as error:
        fail(str(error), program=program)
