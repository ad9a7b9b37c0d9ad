"""``deeprun-lr-finder [overrides]``: the book's learning-rate finder as its own task.

It trains one epoch of the configured model while the rate grows exponentially from ``min_rate`` to
``max_rate`` (η_i = min·(max/min)^(i/(iterations−1)) for batches i = 0 … iterations−1, i.e. multiplied by
a constant factor after each batch, the last at ``max_rate``), records each batch's loss, and suggests as maximum rate the rate at the lowest loss, the bottom of the curve where
the book reads its max rate (≈ 1e-1 on Fashion-MNIST), just before the loss climbs. The weights are
not kept. Writes
``lr_finder.csv``, ``lr_finder.json`` and ``lr_finder.png`` to ``outputs/lr_finder/<name>/<time>/``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from deeprun.commands.common import JOB, fail, run_hydra_app
from deeprun.files import atomic_open
from deeprun.registry import ConfigError, plain_mapping
from deeprun.settings import CONFIG_DIR
from deeprun.training.lr_finder import finder_config, suggest_max_rate


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="lr_finder")
def _main(cfg: DictConfig) -> None:
    JOB.started = True
    from deeprun.commands.console import console
    from deeprun.files import write_json
    from deeprun.settings import settings_from_config
    from deeprun.techniques.schedules import learning_rate_curve
    from deeprun.training.loop import fit

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = plain_mapping(cfg)
        data = settings_from_config({k: v for k, v in config.items() if k != "lr_finder"}).data.load()
        settings = settings_from_config(finder_config(config, len(data.y_train)))
    except ConfigError as error:
        fail(str(error))
    result = fit(settings, data)
    losses = result.batch_losses
    assert losses is not None  # fit keeps every step's loss
    schedule = settings.schedule.resolve(settings.optimizer.learning_rate, len(losses), 1)
    rates = learning_rate_curve(schedule, len(losses), 1)
    suggestion = suggest_max_rate(rates, losses)
    with atomic_open(run_dir / "lr_finder.csv") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "learning_rate", "loss"])
        writer.writerows(zip(range(len(losses)), rates.tolist(), losses.tolist(), strict=True))
    write_json(
        run_dir / "lr_finder.json",
        {
            "iterations": len(losses),
            "min_rate": float(rates[0]),
            "max_rate": float(rates[-1]),
            "epoch_loss": result.history[0]["train/loss"],
            "epoch_accuracy": result.history[0]["train/accuracy"],
            "lowest_loss": float(np.nanmin(losses)),
            "suggested_max_rate": suggestion,
        },
    )
    from deeprun.reports.figures import lr_finder_figure

    lr_finder_figure(rates, losses, run_dir / "lr_finder.png", suggested=suggestion)
    console.print(
        f"LR finder: {len(losses)} batches, rate {rates[0]:.3g} → {rates[-1]:.3g}; epoch loss "
        f"{result.history[0]['train/loss']:.4f}, lowest batch loss {np.nanmin(losses):.4f} at rate "
        f"{suggestion:.3g} (suggested max rate)"
    )
    console.print(f"run folder: {run_dir}")


def main() -> None:
    """``deeprun-lr-finder``."""
    run_hydra_app(_main, "deeprun-lr-finder")


if __name__ == "__main__":
    main()
