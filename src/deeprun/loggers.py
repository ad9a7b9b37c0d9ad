"""Experiment tracking: the ``logger`` config group (``conf/logger/<name>.yaml``).

A logger writes extra files beside the ones every run writes (``metrics.jsonl``, ``summary.json``, ...),
which stay the record of the run:

- ``logger=none`` (the default): nothing more.
- ``logger=tensorboard``: TensorBoard event files (written by tensorboardX; no TensorFlow needed) in
  ``<run>/<dir>``: after each epoch, the epoch record's numbers as scalars at step = epoch
  (``train/loss``, ``train/accuracy``, ``val/loss``, ``val/accuracy``, ``lr``, ``epoch_time_s``, and
  with ``trainer.diagnostics`` each layer's statistics);
  every ``histogram_every`` epochs a histogram of each parameter tensor (``weights/<layer>/<name>``,
  e.g. ``weights/blocks/0/dense/kernel``); at the end, the test metrics (``test/loss``,
  ``test/accuracy`` at the last epoch's step) and the run's hyperparameters (the flattened config) with
  its final metrics, for TensorBoard's HParams tab. ``tensorboard --logdir <sweep folder>`` compares a
  sweep's jobs. A resumed run (``trainer.resume``) adds an event file that makes TensorBoard drop what
  the stopped process logged for the epochs trained again.

``deeprun`` runs (alone, in sweeps under every launcher) and ``deeprun-tune``'s trials log;
``deeprun-lr-finder``, which keeps no run, does not.

Each option builds a :class:`RunLog` per run (``open``); ``deeprun.commands.run`` hands its ``epoch`` to training
as an epoch callback, its ``saver`` (when it needs the weights) as a per-epoch saver, and its ``finish``
the run's summary. A logger only reads, on the host, what training already produces: runs with
different loggers train the same and fuse (``deeprun.sweeps.fusion``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprun.registry import Registry, require, require_non_negative

LOGGERS: Registry[Any] = Registry("logger")

# The record's counters are the step itself, not values to plot.
_NOT_SCALARS = ("epoch", "step")
# The final metrics shown in TensorBoard's HParams tab (each is a scalar of the run).
HPARAM_METRICS = ("test/accuracy", "test/loss", "val/accuracy", "val/loss")
_WRITER_NUMBERS = itertools.count()


class RunLog:
    """What a logger does for one run. This base does nothing (``logger=none``)."""

    saver = None  # an EpochSaver, when the logger needs each epoch's weights (it costs a copy per epoch)

    def epoch(self, record: dict[str, Any]) -> None:
        """An epoch callback: the epoch's record, as ``metrics.jsonl`` gets it."""

    def finish(self, summary: dict[str, Any]) -> None:
        """The run ended (``summary``: its ``summary.json``): write what comes last, then :meth:`close`."""
        self.close()

    def close(self) -> None:
        """Release the files (also called alone when training fails)."""


@LOGGERS.register("none")
@dataclass(frozen=True)
class NoLogger:
    """Only the run folder's own files."""

    def open(self, run_dir: Path, config: Mapping[str, Any]) -> RunLog:
        return RunLog()


@LOGGERS.register("tensorboard")
@dataclass(frozen=True)
class TensorBoard:
    """TensorBoard event files in ``<run>/<dir>`` (see the module docstring)."""

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

    def open(self, run_dir: Path, config: Mapping[str, Any]) -> RunLog:
        return TensorBoardLog(Path(run_dir) / self.dir, self.histogram_every, config)


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
    """A nested config as TensorBoard hyperparameters: dotted keys (``optimizer.learning_rate``), numbers,
    strings and flags kept, lists and empty mappings as JSON text, unset values (None) left out."""
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


def parameter_arrays(params: Any) -> dict[str, Any]:
    """``layer/.../name`` → NumPy array for each leaf of an ``nnx.State`` of parameters."""
    import jax
    from flax import nnx

    flat = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            for key, child in node.items():
                walk(child, (*path, str(key)))
        else:
            flat["/".join(path)] = node

    walk(jax.device_get(nnx.to_pure_dict(params)), ())
    return flat


class TensorBoardLog(RunLog):
    """One run's TensorBoard writer."""

    def __init__(self, logdir: Path, histogram_every: int, config: Mapping[str, Any]):
        self.logdir = logdir
        self.histogram_every = histogram_every
        self.hparams = flat_hparams(config)
        self._writer: Any = None
        if histogram_every:
            self.saver = self.histograms  # type: ignore[assignment]

    def writer(self, first_epoch: int):
        """The event file writer, opened when this process logs its first epoch. ``purge_step`` tells
        TensorBoard to drop what an earlier process logged from that epoch on: a resumed run
        (``trainer.resume``) trains again the epochs after its checkpoint, which the killed process may
        have logged already."""
        if self._writer is None:
            from tensorboardX import SummaryWriter

            # Named as TensorFlow names them (time.host.pid.n): a second writer in the same second, e.g. a
            # quickly resumed run, gets its own file instead of overwriting the first one.
            self._writer = SummaryWriter(
                logdir=str(self.logdir),
                purge_step=first_epoch,
                filename_suffix=f".{os.getpid()}.{next(_WRITER_NUMBERS)}",
            )
        return self._writer

    def epoch(self, record: dict[str, Any]) -> None:
        writer = self.writer(record["epoch"])
        for tag, value in epoch_scalars(record).items():
            writer.add_scalar(tag, value, record["epoch"])
        writer.flush()  # a TensorBoard watching the run sees each epoch as it ends

    def histograms(self, point) -> None:
        """An epoch saver (``train.ResumePoint``): the parameters after every ``histogram_every``-th epoch."""
        epoch = len(point.progress["history"])
        if epoch % self.histogram_every == 0:
            writer = self.writer(epoch)
            for name, values in parameter_arrays(point.state.params).items():
                writer.add_histogram(f"weights/{name}", values, epoch)

    def finish(self, summary: dict[str, Any]) -> None:
        from tensorboardX.summary import hparams

        step = summary["epochs_completed"]
        writer = self.writer(step + 1)
        test = {f"test/{key}": value for key, value in (summary.get("test") or {}).items()}
        for tag, value in test.items():
            writer.add_scalar(tag, value, step)
        final = {**(summary.get("final") or {}), **test}  # "final": the last epoch's train/... and val/...
        metrics = {tag: final[tag] for tag in HPARAM_METRICS if final.get(tag) is not None}
        # In this run's own event file (tensorboardX's add_hparams would open a sub-run): one run, one session.
        for proto in hparams(self.hparams, metrics):
            writer.file_writer.add_summary(proto)
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
