"""``logger=tensorboard``: TensorBoard event files written by tensorboardX (no TensorFlow needed).

In ``<run>/<dir>``: after each epoch, the epoch record's numbers as scalars at step = epoch
(``train/loss``, ``train/accuracy``, ``val/loss``, ``val/accuracy``, ``lr``, ``epoch_time_s``, and with
``trainer.diagnostics`` each layer's statistics); every ``histogram_every`` epochs a histogram of each
parameter tensor (``weights/<layer>/<name>``, e.g. ``weights/blocks/0/dense/kernel``); at the end, the
test metrics (``test/loss``, ``test/accuracy`` at the last epoch's step) and the run's hyperparameters
(the flattened config) with its final metrics, for TensorBoard's HParams tab. ``tensorboard --logdir
<sweep folder>`` compares a sweep's jobs. A resumed run (``trainer.resume``) adds an event file that makes
TensorBoard drop what the stopped process logged for the epochs trained again.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deeprun.loggers import RunLog, epoch_scalars, final_metrics, flat_hparams, test_metrics

_WRITER_NUMBERS = itertools.count()


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
            self.saver = self.histograms

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
        for tag, value in test_metrics(summary).items():
            writer.add_scalar(tag, value, step)
        metrics = final_metrics(summary)
        # In this run's own event file (tensorboardX's add_hparams would open a sub-run): one run, one session.
        for proto in hparams(self.hparams, metrics):
            writer.file_writer.add_summary(proto)
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
