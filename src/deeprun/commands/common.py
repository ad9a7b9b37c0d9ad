"""What every command shares: one-line errors and exit codes, the Hydra front, process setup.

Only commands print errors or exit; the layers below raise :class:`~deeprun.registry.ConfigError` (bad
input) or return statuses.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from deeprun.exit_codes import ExitCode, for_signal
from deeprun.registry import ConfigError, options_from_tokens

if TYPE_CHECKING:
    from deeprun.training.loop import StopRequest

T = TypeVar("T")


def fail(message: str, program: str = "deeprun") -> NoReturn:
    """Print one error line and exit 2; the folders this command made and left empty are removed."""
    from deeprun.runs.ownership import release_all

    print(f"{program}: error: {message}", file=sys.stderr)
    release_all(discard=True)
    sys.exit(ExitCode.BAD_INPUT)


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


#: The signals that stop a command: Ctrl-C, and what Slurm, Kubernetes and ``timeout`` send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, stopping the command at once: before training, or a second one during it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def interrupt_at_once() -> dict[int, Any] | None:
    """SIGINT and SIGTERM raise :class:`Interrupted` (SIGTERM's default would end the process silently)."""
    return _install(_interrupt)


def exit_interrupted(program: str, error: KeyboardInterrupt) -> NoReturn:
    """One line and exit 130 (SIGINT) or 143 (SIGTERM); the folders this command made and had not yet
    written into are removed, the others (a run's progress) kept."""
    from deeprun.runs.ownership import release_all

    signum = getattr(error, "signum", signal.SIGINT)
    release_all(discard=True)
    kept = JOB.folder is not None and JOB.folder.exists()
    where = f"; its state is in {JOB.folder}" if kept else "; nothing was kept"
    print(f"{program}: interrupted ({signal.Signals(signum).name}){where}", file=sys.stderr)
    sys.exit(for_signal(signum))


def _install(handler: Any) -> dict[int, Any] | None:
    """Set ``handler`` for :data:`STOP_SIGNALS`; the previous handlers (None: not the main thread)."""
    try:
        return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    except ValueError:
        return None


def _restore(previous: dict[int, Any] | None) -> None:
    for signum, handler in (previous or {}).items():
        signal.signal(signum, handler)


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[StopRequest]:
    """While training, the first SIGINT or SIGTERM asks for a clean stop at the end of the epoch
    (``JOB.signal`` records which); a second one interrupts at once. Outside the main thread there is
    no handler."""
    from deeprun.training.loop import StopRequest

    stop = StopRequest()
    stop.requested = JOB.stop_requested  # a signal that came before training (a sweep's worker starting)

    def request_stop(signum: int, frame: Any) -> None:
        stop.requested, JOB.signal = True, signum
        _install(_interrupt)

    previous = _install(request_stop)
    try:
        yield stop
    finally:
        _restore(previous)


def run_hydra_app(app: Callable[[], Any], program: str, show: Callable[[list[str]], str | None] | None = None) -> None:
    """Run a ``@hydra.main`` app on the command line's overrides as :func:`field_overrides` rewrites
    them (the line as typed is what ``summary.json`` records). ``show``: a config to print instead of
    running (``deeprun --cfg job``), or None. Errors Hydra finds before a job starts (an unknown option,
    a malformed override, an output folder it cannot create) end like deeprun's own: one ``PROGRAM:
    error:`` line, exit 2. ``JOB.started`` (set by the app once Hydra hands it a job) tells later
    OSErrors apart. SIGINT or SIGTERM outside training ends with one line and exit 130 or 143; what the
    command had made and not yet written into is removed."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from deeprun.commands.console import download_bar
    from deeprun.data.storage import shown_downloads
    from deeprun.runs.environment import pin_cpu_threads, record_command_line
    from deeprun.runs.ownership import release_all

    pin_cpu_threads()
    record_command_line(sys.argv)
    try:
        sys.argv[1:] = field_overrides(sys.argv[1:])
        shown = show(sys.argv[1:]) if show is not None else None
    except ConfigError as error:
        fail(str(error), program=program)
    if shown is not None:
        print(shown, end="")
        return
    quiet_launcher_schema_warning()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors here instead of printing them itself
    JOB.started, JOB.signal, JOB.folder = False, signal.SIGINT, None
    previous = interrupt_at_once()
    try:
        with shown_downloads(download_bar):
            app()
    except (HydraException, OmegaConfBaseException) as error:
        fail(composition_message(error), program=program)
    except ConfigError as error:  # raised by deeprun's Hydra callbacks, before any job
        fail(str(error), program=program)
    except KeyboardInterrupt as error:
        exit_interrupted(program, error)
    except BrokenPipeError:  # the reader of stdout went away (`--help | head`): the entry point ends quietly
        raise
    except OSError as error:
        if JOB.started:
            raise
        fail(f"cannot create the output folder: {error}", program=program)
    finally:
        release_all()
        _restore(previous)


class JOB:
    """This process's command: whether Hydra has handed it a job (set by each app's first line), the
    signal that stopped it and the folder its state is in (set by the app)."""

    started = False
    signal: int = signal.SIGINT
    folder: Path | None = None
    stuck_writers = False  # a checkpoint write failed: its threads may never end (see ``entry``)
    stop_requested = False  # a stop signal came before training started


def field_overrides(tokens: Sequence[str]) -> list[str]:
    """Command-line overrides as Hydra gets them: ``group.field=value`` for a field of one of the group's
    options becomes ``++group.field=value`` (set, or add when the selected option's YAML leaves it out:
    the option's schema has it). A typo stays as written, for Hydra's "no such field" line. Deleting a
    field (``~trainer.early_stopping``) is an error: every field has a value, which an override sets.
    The plugins (installed, and those ``plugins=`` names) are imported first, so their options' fields
    are known."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from deeprun.plugins import load_plugins
    from deeprun.settings import is_option_field

    named: list[str] = []
    for token in tokens:
        if token.startswith("plugins="):
            value = OverridesParser.create().parse_overrides([token])[0].value()
            named = [str(name) for name in value] if isinstance(value, list) else [str(value)]
    load_plugins(named)  # and the installed ones (entry points)
    result = []
    for token in tokens:
        key, sep, _ = token.partition("=")
        if token.startswith("~") and "." in key and is_option_field(key[1:]):
            raise ConfigError(
                f"{token}: a field cannot be deleted (every field of an option has a value); "
                f"set it instead, e.g. {key[1:]}=<value>"
            )
        plain = sep and not token.startswith(("-", "+", "~")) and "." in key
        result.append(f"++{token}" if plain and is_option_field(key) else token)
    return result


def composition_message(error: BaseException) -> str:
    """The one line for an error Hydra or OmegaConf raised while composing the config."""
    from hydra.errors import MissingConfigException

    if isinstance(error, MissingConfigException):
        return missing_option_message(error)
    return unknown_key_message(error.__cause__) or override_message(error)


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


def override_message(error: BaseException) -> str:
    """Hydra's error, with the cause it hides: ``trainer.phases={epochs: 1}`` → "... : trainer.phases
    is a list; cannot merge a mapping into it"."""
    message = one_line(str(error))
    cause = error.__cause__
    if cause is not None and message.startswith("Error merging override"):
        key = getattr(cause, "full_key", "") or ""
        detail = one_line(str(cause)).split("; full_key:")[0].split("; object_type")[0]
        kinds = {"DictConfig": "a mapping", "ListConfig": "a list"}
        merged = re.match(r"Cannot merge (\w+) with (\w+)", detail)
        if merged and key and {merged[1], merged[2]} <= set(kinds):
            return f"{message}: {key} is {kinds[merged[2]]}, the override gives {kinds[merged[1]]}"
        return f"{message}: {key + ': ' if key else ''}{detail}"
    return message


def one_line(message: str) -> str:
    """Hydra's multi-line messages as one line, without its hint about HYDRA_FULL_ERROR."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(line for line in lines if "HYDRA_FULL_ERROR" not in line)


def folder_command_help(docstring: str, options_cls: type) -> str:
    """A command's help from its module docstring's first paragraph (``PROGRAM ARGS: what it does``) in
    plain text, then its options with their defaults."""
    import dataclasses

    first, _, rest = docstring.strip().split("\n\n", 1)[0].replace("``", "").partition(": ")
    lines = [f"usage: {first}", "", " ".join(rest.split()), "", "options (key=value):"]
    for option in dataclasses.fields(options_cls):
        if option.default is not dataclasses.MISSING:
            value = option.default
        elif option.default_factory is not dataclasses.MISSING:
            value = option.default_factory()
        else:
            value = "(required)"
        lines.append(f"  {option.name}={value}")
    return "\n".join(lines)


def run_folder_command(
    program: str, usage: str, options_cls: type[T], action: Callable[[Path, T], Any], argv: Sequence[str] | None = None
) -> Any:
    """The front of the commands that work on a finished run (``deeprun-eval``, ``-prune``, ``-export``):
    ``PROGRAM RUN_DIR key=value ...``. ``-h``/``--help`` prints :func:`folder_command_help`; bad input (a
    ConfigError) ends with one ``PROGRAM: error:`` line and exit 2. Returns ``action(run_dir, options)``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(folder_command_help(usage, options_cls))
        sys.exit(ExitCode.OK if args else ExitCode.BAD_INPUT)
    try:
        return action(Path(args[0]), options_from_tokens(options_cls, args[1:]))
    except ConfigError as error:
        fail(str(error), program=program)
