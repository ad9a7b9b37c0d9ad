"""Experiment tracking: the ``logger`` config group (``conf/logger/<name>.yaml``).

A logger writes beside the files every run writes (``metrics.jsonl``, ``summary.json``, ...), which stay
the record of the run. Like ``regularizer``, the group selects several options at once:
``logger=[tensorboard,mlflow]`` composes ``logger: {tensorboard: {...}, mlflow: {...}}``; fields are
``logger.<option>.<field>``.

- ``logger=none`` (the default): nothing more.
- ``logger=tensorboard`` (:mod:`deeprun.loggers.tensorboard`): TensorBoard event files in
  ``<run>/<dir>``: each epoch's numbers as scalars at step = epoch (``train/loss``, ``val/accuracy``,
  ``lr``, ``epoch_time_s``, with ``trainer.diagnostics`` each layer's statistics), weight histograms,
  the test metrics and the run's hyperparameters with its final metrics (the HParams tab).
- ``logger=mlflow`` (:mod:`deeprun.loggers.mlflow`, the ``deeprun[mlflow]`` extra): one MLflow run per
  run, with its flattened config as params, the same per-epoch metrics with their step, the test
  metrics, tags (status, git commit, deeprun version) and the run folder's files as artifacts; a sweep
  (or a ``deeprun-tune`` study) is a parent run with its jobs nested.

``deeprun`` runs (alone, in sweeps under every launcher) and ``deeprun-tune``'s trials log;
``deeprun-lr-finder``, which keeps no run, does not.

:meth:`Loggers.open` builds a :class:`RunLog` per run; ``deeprun.commands.run`` hands its ``epoch`` to
training as an epoch callback, its ``saver`` (when it needs the weights) as a per-epoch saver, and its
``finish`` the run's summary. A logger only reads, on the host, what training already produces: runs with
different loggers train the same and fuse (``deeprun.sweeps.fusion``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprun.registry import ConfigError, Registry, from_mapping, require, require_non_negative

LOGGERS: Registry[Any] = Registry("logger")

# The record's counters are the step itself, not values to plot.
_NOT_SCALARS = ("epoch", "step")
# The final metrics a run's tracking shows beside its hyperparameters.
HPARAM_METRICS = ("test/accuracy", "test/loss", "val/accuracy", "val/loss")


class RunLog:
    """What a logger does for one run. This base does nothing (``logger=none``)."""

    saver: Callable[[Any], None] | None = None  # an EpochSaver, when the logger needs each epoch's weights

    def epoch(self, record: dict[str, Any]) -> None:
        """An epoch callback: the epoch's record, as ``metrics.jsonl`` gets it."""

    def finish(self, summary: dict[str, Any]) -> None:
        """The run ended (``summary``: its ``summary.json``, the folder's files written): write what comes last."""

    def close(self) -> None:
        """Training failed (an exception, a second Ctrl-C): release what is open; :meth:`finish` will not come."""


class RunLogs(RunLog):
    """Several loggers' logs of one run, called in their order."""

    def __init__(self, logs: list[RunLog]):
        self.logs = logs
        self.saver = all_of(*(log.saver for log in logs))

    def epoch(self, record: dict[str, Any]) -> None:
        for log in self.logs:
            log.epoch(record)

    def finish(self, summary: dict[str, Any]) -> None:
        for log in self.logs:
            log.finish(summary)

    def close(self) -> None:
        for log in self.logs:
            log.close()


@LOGGERS.register("none")
@dataclass(frozen=True)
class NoLogger:
    """Only the run folder's own files (selects nothing: ``logger=none`` composes ``logger: {}``)."""

    def open(self, run_dir: Path, config: Mapping[str, Any], sweep_dir: Path | None, label: str) -> RunLog:
        return RunLog()


@LOGGERS.register("tensorboard")
@dataclass(frozen=True)
class TensorBoard:
    """TensorBoard event files in ``<run>/<dir>`` (tensorboardX, no TensorFlow)."""

    dir: str = "tensorboard"  # relative to the run folder
    histogram_every: int = 1  # epochs between weight histograms; 0: none (Keras's histogram_freq)

    def __post_init__(self) -> None:
        require(
            bool(self.dir) and not Path(self.dir).is_absolute(),
            "logger.tensorboard.dir",
            "must be a folder name relative to the run folder",
            self.dir,
        )
        require_non_negative("logger.tensorboard.histogram_every", self.histogram_every)

    def open(self, run_dir: Path, config: Mapping[str, Any], sweep_dir: Path | None, label: str) -> RunLog:
        from deeprun.loggers.tensorboard import TensorBoardLog

        return TensorBoardLog(Path(run_dir) / self.dir, self.histogram_every, config)


@LOGGERS.register("mlflow")
@dataclass(frozen=True)
class MLflow:
    """An MLflow run per run, nested under its sweep's run (needs ``pip install 'deeprun[mlflow]'``)."""

    # None: $MLFLOW_TRACKING_URI, else the SQLite database outputs/mlflow.db (where deeprun was started)
    tracking_uri: str | None = None
    experiment: str | None = None  # None: the config's name (default, ch11_batchnorm, ...)
    artifacts: bool = True  # the run folder's files (summary, metrics, plots, checkpoint) as artifacts

    def __post_init__(self) -> None:
        require(self.tracking_uri is None or bool(self.tracking_uri), "logger.mlflow.tracking_uri", "is empty", "")
        require(self.experiment is None or bool(self.experiment), "logger.mlflow.experiment", "is empty", "")
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError("logger=mlflow needs MLflow: pip install 'deeprun[mlflow]'")

    def open(self, run_dir: Path, config: Mapping[str, Any], sweep_dir: Path | None, label: str) -> RunLog:
        from deeprun.loggers.mlflow import MLflowLog

        return MLflowLog(
            Path(run_dir), config, self.store(), self.experiment_name(config), self.artifacts, sweep_dir, label
        )

    def open_sweep(self, sweep_dir: Path, config: Mapping[str, Any]) -> None:
        """Create the sweep's parent run now (a sweep's first job creates it otherwise)."""
        from deeprun.loggers.mlflow import open_parent

        open_parent(Path(sweep_dir), self.store(), self.experiment_name(config))

    def experiment_name(self, config: Mapping[str, Any]) -> str:
        return self.experiment or str(config.get("name") or "default")

    def store(self) -> str:
        """The tracking URI: this option's, ``$MLFLOW_TRACKING_URI``'s, or ``sqlite:///<cwd>/outputs/mlflow.db``."""
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        return uri or f"sqlite:///{Path('outputs').resolve() / 'mlflow.db'}"


@dataclass(frozen=True)
class Loggers:
    """The selected loggers (``logger=[tensorboard,mlflow]``), each validated; none: ``logger=none``."""

    selected: tuple[Any, ...] = ()

    def open(
        self, run_dir: Path, config: Mapping[str, Any], sweep_dir: Path | None = None, label: str | None = None
    ) -> RunLog:
        """One run's log (``sweep_dir``: the sweep or study the run is a job of; ``label``: what the console
        calls the run, ``default #3``; None: its name)."""
        name = label or str(config.get("name") or "run")
        logs = [option.open(Path(run_dir), config, sweep_dir, name) for option in self.selected]
        return logs[0] if len(logs) == 1 else RunLogs(logs)

    def open_sweep(self, sweep_dir: Path, config: Mapping[str, Any]) -> None:
        """A sweep or study starts in ``sweep_dir`` (``config``: its own, before any job's overrides):
        loggers that track sweeps start its record (its jobs would otherwise, each with its own config)."""
        for option in self.selected:
            if hasattr(option, "open_sweep"):
                option.open_sweep(sweep_dir, config)


def build_loggers(entry: Mapping[str, Any] | None) -> Loggers:
    """Validate ``{name: fields}`` (``none`` or an empty mapping: no logger). An older run's saved config
    names one option as ``{name: tensorboard, dir: ...}``: read as ``{tensorboard: {dir: ...}}``."""
    selected = []
    for name, fields in _by_name(entry).items():
        if name == "none":  # the older one-option form of logger=none
            continue
        if not isinstance(fields, Mapping | None):
            raise ConfigError(f"logger.{name} must be a mapping of its fields (got {fields!r})")
        selected.append(from_mapping(LOGGERS.get(name), dict(fields or {}), f"logger.{name}"))
    return Loggers(tuple(selected))


def complete_loggers(entry: Any) -> Any:
    """Each selected logger's fields completed (an older run's one-option form read as ``{name: fields}``)."""
    return LOGGERS.complete_each(_by_name(entry)) if isinstance(entry, Mapping) else entry


def _by_name(entry: Mapping[str, Any] | None) -> dict[str, Any]:
    if not entry:
        return {}
    if not isinstance(entry, Mapping):
        raise ConfigError(f"logger must be a mapping of logger names to their fields (got {entry!r})")
    if "name" in entry and isinstance(entry["name"], str):  # the one-option form of older runs' configs
        return {entry["name"]: {key: value for key, value in entry.items() if key != "name"}}
    return dict(entry)


def all_of(*savers: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
    """One epoch saver that calls each of ``savers`` that is not None (None if all are): a run's
    checkpoint saver and its logger's."""
    present = [saver for saver in savers if saver is not None]
    if not present:
        return None

    def save(point: Any) -> None:
        for saver in present:
            saver(point)

    return save


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as hyperparameters: dotted keys (``optimizer.learning_rate``), numbers, strings and
    flags kept, lists and empty mappings as JSON text, unset values (None) left out."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = json.dumps(value, default=str)
    return flat


def epoch_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """An epoch record's finite numbers by tag, with ``trainer.diagnostics``'s per-layer rows as
    ``diagnostics/<statistic>/layer_<n>`` (one chart per statistic, a line per layer)."""
    scalars = {
        key: value
        for key, value in record.items()
        if key not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    for row in record.get("diagnostics") or ():
        scalars.update(
            {f"diagnostics/{key}/layer_{row['layer']}": value for key, value in row.items() if key != "layer"}
        )
    return {tag: float(value) for tag, value in scalars.items() if math.isfinite(value)}


def test_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """A summary's test metrics as ``test/<metric>`` (none: the run did not reach its test)."""
    return {f"test/{key}": value for key, value in (summary.get("test") or {}).items() if value is not None}


def final_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """:data:`HPARAM_METRICS` of a summary: its test metrics and its last epoch's (``final``)."""
    final = {**(summary.get("final") or {}), **test_metrics(summary)}
    return {tag: final[tag] for tag in HPARAM_METRICS if final.get(tag) is not None}


def finish_sweep(sweep_dir: Path, status: str) -> None:
    """A sweep (or a study) ended with ``status`` (``completed``, ``failed``, ``interrupted``): end the
    parent runs its jobs' loggers opened in ``sweep_dir`` (none: nothing to do)."""
    from deeprun.loggers.mlflow import RUN_FILE, finish_parent

    if (Path(sweep_dir) / RUN_FILE).is_file():
        try:
            finish_parent(Path(sweep_dir), status)
        except Exception as error:  # the tracking store: the sweep's folder still holds every record
            print(
                f"deeprun: warning: could not end the sweep's tracking run: {type(error).__name__}: {error}",
                file=sys.stderr,
            )
