"""``deeprun-lr-finder [overrides]``: the book's learning-rate finder as its own task.

It trains one epoch of the configured model while the rate grows exponentially from ``min_rate`` to
``max_rate`` (η_i = min·(max/min)^(i/iterations), i.e. multiplied by a constant factor after each
batch), records each batch's loss, and suggests as maximum rate the rate at the lowest loss, the bottom of the curve where
the book reads its max rate (≈ 1e-1 on Fashion-MNIST), just before the loss climbs. The weights are
not kept. Writes
``lr_finder.csv``, ``lr_finder.json`` and ``lr_finder.png`` to ``outputs/lr_finder/<name>/<time>/``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from deeprun.cli import CONFIG_DIR, fail
from deeprun.registry import ConfigError, require, require_positive


def finder_config(config: dict[str, Any], n_train: int) -> dict[str, Any]:
    """The training config of the sweep: one epoch, exponential per-step schedule, no extras."""
    import math

    options = config.pop("lr_finder")
    min_rate, max_rate, batch_size = options["min_rate"], options["max_rate"], options["batch_size"]
    require_positive("lr_finder.min_rate", min_rate)
    require(max_rate > min_rate, "lr_finder.max_rate", "must be > lr_finder.min_rate", max_rate)
    require_positive("lr_finder.batch_size", batch_size)
    iterations = math.ceil(n_train / batch_size)
    config["schedule"] = {"name": "exponential", "initial_lr": min_rate, "decay_rate": max_rate / min_rate,
                          "decay_steps": iterations, "staircase": False, "unit": "step"}
    config["trainer"] = {**config["trainer"], "epochs": 1, "batch_size": batch_size, "phases": [],
                         "checkpoint": False, "plots": False,
                         "early_stopping": {**config["trainer"]["early_stopping"], "enabled": False}}
    return config


def suggest_max_rate(rates: np.ndarray, losses: np.ndarray) -> float:
    """The rate at the lowest (finite) batch loss: the bottom of the loss-vs-rate curve."""
    finite = np.isfinite(losses)
    return float(rates[finite][np.argmin(losses[finite])])


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="lr_finder")
def _main(cfg: DictConfig) -> None:
    from deeprun.progress import console
    from deeprun.runs import write_json_atomic
    from deeprun.schedules import learning_rate_curve
    from deeprun.settings import settings_from_config
    from deeprun.train import fit

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
        data = settings_from_config({k: v for k, v in config.items() if k != "lr_finder"}).data.load()
        settings = settings_from_config(finder_config(config, len(data.y_train)))
    except ConfigError as error:
        fail(str(error), run_dir)
    result = fit(settings, data)
    losses = result.batch_losses
    schedule = settings.schedule.resolve(settings.optimizer.learning_rate, len(losses), 1)
    rates = learning_rate_curve(schedule, len(losses), 1)
    suggestion = suggest_max_rate(rates, losses)
    with open(run_dir / "lr_finder.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "learning_rate", "loss"])
        writer.writerows(zip(range(len(losses)), rates.tolist(), losses.tolist(), strict=True))
    write_json_atomic(run_dir / "lr_finder.json", {
        "iterations": len(losses), "min_rate": float(rates[0]), "max_rate": float(rates[-1]),
        "epoch_loss": result.history[0]["train/loss"], "epoch_accuracy": result.history[0]["train/accuracy"],
        "lowest_loss": float(np.nanmin(losses)), "suggested_max_rate": suggestion,
    })
    from deeprun.figures import lr_finder_figure

    lr_finder_figure(rates, losses, run_dir / "lr_finder.png")
    console.print(f"LR finder: {len(losses)} batches, rate {rates[0]:.3g} → {rates[-1]:.3g}; epoch loss "
                  f"{result.history[0]['train/loss']:.4f}, lowest batch loss {np.nanmin(losses):.4f} at rate "
                  f"{suggestion:.3g} (suggested max rate)")
    console.print(f"run folder: {run_dir}")


def main() -> None:
    sys.exit(_main())


if __name__ == "__main__":
    main()
