"""deeprun from Python (a notebook, a script): train runs and read results back as tables.

>>> import deeprun
>>> run = deeprun.train(["data=synthetic", "trainer.epochs=2"])      # doctest: +SKIP
>>> run.summary["test"]["accuracy"], run.history[-1]["val/loss"]     # doctest: +SKIP
>>> runs = deeprun.load_runs("outputs/sweeps/default")               # doctest: +SKIP
>>> runs.groupby("optimizer.learning_rate")["final.val/accuracy"].agg(["mean", "std"])  # doctest: +SKIP

:func:`train` is ``deeprun OVERRIDES`` in this process: the same composition, validation, training
and run folder. :func:`load_runs` and :func:`load_history` return pandas DataFrames (the optional extra
``pip install 'deeprun[frames]'``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeprun.exit_codes import ExitCode
from deeprun.registry import ConfigError


class RunFailed(RuntimeError):
    """The run failed while training (its folder's ``summary.json`` says why)."""


@dataclass
class Run:
    """A run folder read back: its config (in full, as it ran), summary and per-epoch history.
    :attr:`model` is the trained Flax module (logits of scaled inputs); :meth:`predict` takes raw inputs."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str((self.summary or {}).get("status", "unfinished"))

    @functools.cached_property
    def _loaded(self):
        from deeprun.runs.loading import load_run as load_finished

        return load_finished(self.path)

    @property
    def model(self):
        """The trained network (``model(x)`` → logits for scaled, flattened inputs)."""
        return self._loaded.model()

    def predict(self, inputs) -> Any:
        """Class probabilities for raw inputs (uint8 pixels or the dataset's own values, any batch shape
        ``(N, ...)``), with the run's scaling applied."""
        import numpy as np

        from deeprun.models import predict_probabilities

        scaling = self._loaded.settings.data.load().scaling
        x = scaling.apply(np.asarray(inputs).reshape(len(inputs), -1))
        return np.asarray(predict_probabilities(self.model(x), self._loaded.settings.model.head))


def train(overrides: Sequence[str] = (), *, config_dir: str | Path | None = None) -> Run:
    """Compose ``overrides`` (as on the command line), validate, train and write the run folder; the run.

    ``config_dir``: a folder of your own YAMLs (``--config-dir``). Bad input raises :class:`ConfigError`
    (nothing is written), a failed run :class:`RunFailed`; a diverged run is returned (``status``
    ``diverged``). Ctrl-C stops at the end of the epoch and raises KeyboardInterrupt (the folder resumes)."""
    from hydra.core.global_hydra import GlobalHydra

    from deeprun.commands import run as command
    from deeprun.commands.common import JOB

    if any(token in ("-m", "--multirun") for token in overrides):
        raise ConfigError("deeprun.train trains one run; sweep with `deeprun -m ...` and read it with load_runs")
    argv = ["deeprun", *(["--config-dir", str(config_dir)] if config_dir is not None else [])]
    # Leave the caller's logging (a notebook's) as it is.
    argv += ["hydra/job_logging=none", "hydra/hydra_logging=none", *overrides]
    errors = _Tee(sys.stderr)
    saved_argv = sys.argv
    code: int = ExitCode.OK
    try:
        sys.argv = argv
        with contextlib.redirect_stderr(errors):
            try:
                command.main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else ExitCode.FAILED
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()
    message = errors.last_error()
    if code == ExitCode.BAD_INPUT:
        raise ConfigError(message)
    if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED):
        raise KeyboardInterrupt(message)
    if JOB.folder is None or code not in (ExitCode.OK, ExitCode.DIVERGED):
        raise RunFailed(message or f"deeprun exited with status {code}")
    return load_run(JOB.folder)


class _Tee(io.TextIOBase):
    """Writes through to ``stream`` and keeps the last ``deeprun: error:`` line."""

    def __init__(self, stream):
        self.stream, self.lines = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.lines.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def last_error(self) -> str:
        errors = [line for line in self.lines.getvalue().splitlines() if line.startswith("deeprun: error: ")]
        return errors[-1].removeprefix("deeprun: error: ") if errors else ""


def load_run(path: str | Path) -> Run:
    """The run in folder ``path`` (finished or not): config, summary, history; ConfigError if it is none."""
    from deeprun.registry import plain_mapping
    from deeprun.runs.records import read_run

    path = Path(path)
    config_file = path / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{path} is not a deeprun run folder (no .hydra/config.yaml)")
    record = read_run(path)
    return Run(path, plain_mapping(config_file), record.summary, record.metrics)


def load_runs(folder: str | Path):
    """A DataFrame with one row per run folder below ``folder`` (a sweep, a tuning study, any folder of
    runs): ``path``, ``job``, ``status``, ``epochs_completed``, one column per config field (flattened:
    ``optimizer.learning_rate``; lists as tuples) and per metric (``final.val/accuracy``,
    ``best.val/loss``, ``test.accuracy``, ``best_epoch``, ``wall_time_s``)."""
    from deeprun.runs.records import collect_runs, run_table_row

    pandas = _pandas("load_runs")
    rows = [run_table_row(record) for record in collect_runs(Path(folder))]
    return pandas.DataFrame(rows)


def load_history(folder: str | Path):
    """The per-epoch metrics of the run in ``folder``, or of every run below it: one row per run and
    epoch, with ``path`` and ``job`` columns naming the run."""
    from deeprun.runs.records import collect_runs

    pandas = _pandas("load_history")
    rows = [
        {"path": str(record.path), "job": record.job, **epoch}
        for record in collect_runs(Path(folder))
        for epoch in record.metrics
    ]
    return pandas.DataFrame(rows)


def _pandas(function: str):
    try:
        import pandas
    except ImportError:
        raise ImportError(
            f"deeprun.{function} returns a pandas DataFrame: install pandas with pip install 'deeprun[frames]'"
        ) from None
    return pandas
