"""What a run needs, checked before it compiles: steps in an epoch, a step counter that fits 32 bits, a
schedule that resolves, and memory for its state and batches. A run that cannot work is bad input."""

from __future__ import annotations

import jax

from deeprun.memory import require_fits
from deeprun.registry import INT32_MAX, ConfigError, require
from deeprun.settings import Settings
from deeprun.training.trainer import state_structure, steps_per_epoch, training_devices
from deeprun.training.transfer import Donor, describe_layers, transfer_layers

#: Copies of the training state alive at once: the donated state, the new one, early stopping's best
#: weights and the resume point being saved.
STATE_COPIES = 4
#: Arrays per hidden unit and example in a training step: pre-activation, activation, BN output and
#: their gradients.
ACTIVATION_ARRAYS = 6


def check_run_fits(
    settings: Settings, n_train: int, n_features: int, n_classes: int, members: int = 1, donor: Donor | None = None
) -> None:
    """ConfigError (one line naming the setting) unless ``members`` runs of ``settings`` can train on
    a training set of ``n_train`` examples here, taking their reused layers from ``donor`` (if any)."""
    trainer = settings.trainer
    steps = steps_per_epoch(n_train, trainer.batch_size, trainer.drop_remainder)
    if steps == 0:
        raise ConfigError(
            f"trainer.batch_size {trainer.batch_size:,} is larger than the training set ({n_train:,} examples) "
            "with trainer.drop_remainder=true: an epoch would have no step"
        )
    total = steps * trainer.epochs
    require(
        total <= INT32_MAX,
        "trainer.epochs",
        f"x {steps:,} steps per epoch = {total:,} steps overflows the 32-bit step counter",
        trainer.epochs,
    )
    settings.schedule.resolve(settings.optimizer.learning_rate, steps, trainer.epochs)
    widths = (n_features, *settings.model.hidden_layers(), n_classes)
    batch = max(trainer.batch_size, trainer.eval_batch_size)
    activation_bytes = 4 * ACTIVATION_ARRAYS * batch * sum(widths)
    # The kernels alone first: tracing the model's structure (below) takes long for a huge one.
    kernel_bytes = 4 * sum(a * b for a, b in zip(widths, widths[1:]))
    _require_memory(members, kernel_bytes, activation_bytes)
    structure = state_structure(settings, n_features, n_classes)
    if donor is not None:  # shapes and layer kinds only: the abstract structure is enough
        transfer_layers(settings.model, structure.params, structure.batch_stats, donor, describe_layers(settings))
    _require_memory(
        members, sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(structure)), activation_bytes
    )


def _require_memory(members: int, state_bytes: int, activation_bytes: int) -> None:
    need = members * (STATE_COPIES * state_bytes + activation_bytes)
    what = f"training {members} run(s) of {state_bytes / 2**20:,.1f} MiB of state"
    require_fits("model", need, what, _device_bytes())


def _device_bytes() -> int | None:
    """The free memory of the first training device (None on a CPU: the host's is checked)."""
    device = training_devices(1)[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
