"""``deeprun-signal [initializer=lecun_normal] [activation=selu] [layers=1000] [width=100] [every=100]
[batch=500] [seed=42]``: the book's self-normalization demo for any initializer × activation.

What it computes and writes: ``deeprun.training.signal``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from deeprun.commands.common import JOB, fail, run_hydra_app
from deeprun.files import atomic_open
from deeprun.registry import ConfigError, plain_mapping
from deeprun.settings import CONFIG_DIR
from deeprun.training.signal import STATISTICS, SignalOptions, SignalStats, propagate


def write_outputs(
    stats: SignalStats, options: SignalOptions, config: dict[str, Any], out_dir: Path, title: str
) -> None:
    """``signal.csv`` (every layer), ``signal.json`` (options and table) and ``signal.png``."""
    from deeprun.files import write_json
    from deeprun.reports.figures import signal_figure

    with atomic_open(out_dir / "signal.csv") as f:
        writer = csv.writer(f)
        writer.writerow(["depth", *STATISTICS])
        writer.writerows(zip(stats.depths.tolist(), *(getattr(stats, s).tolist() for s in STATISTICS), strict=True))
    write_json(
        out_dir / "signal.json",
        {
            "initializer": config["initializer"],
            "activation": config["activation"],
            "options": {**options.__dict__},
            "table": stats.rows(options.every),
        },
    )
    signal_figure(stats.depths, {s: getattr(stats, s) for s in STATISTICS}, out_dir / "signal.png", title=title)


def signal_table(stats: SignalStats, every: int):
    from rich.table import Table

    table = Table()
    for column in ("depth", *STATISTICS):
        table.add_column(column, justify="right")
    for row in stats.rows(every):
        table.add_row(str(row["depth"]), *(_number(row[s], s == "mean") for s in STATISTICS))
    return table


def _number(value: float, signed: bool) -> str:
    """Three decimals (signed for means, where 0 is the target); three significant digits for a
    vanishing std/rms or an exploding value."""
    if not np.isfinite(value) or abs(value) >= 1e4 or (not signed and 0 < abs(value) < 1e-2):
        return f"{value:.3g}"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="signal")
def _main(cfg: DictConfig) -> None:
    JOB.started = True
    from deeprun.commands.console import console
    from deeprun.registry import from_mapping
    from deeprun.techniques.activations import ACTIVATIONS
    from deeprun.techniques.initializers import INITIALIZERS

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    config = plain_mapping(cfg)
    try:
        initializer = INITIALIZERS.build(config["initializer"])
        activation = ACTIVATIONS.build(config["activation"])
        options = from_mapping(
            SignalOptions, {k: v for k, v in config.items() if k not in ("initializer", "activation")}, ""
        )
    except ConfigError as error:
        fail(str(error))
    stats = propagate(initializer, activation, options)
    title = (
        f"{config['initializer']['name']} × {config['activation']['name']}: {options.layers} layers of "
        f"{options.width} units, batch {options.batch}, seed {options.seed}"
    )
    write_outputs(stats, options, config, out_dir, title)
    console.print(title)
    console.print(signal_table(stats, options.every))
    console.print(f"output folder: {out_dir}")


def main() -> None:
    """``deeprun-signal``."""
    run_hydra_app(_main, "deeprun-signal")


if __name__ == "__main__":
    main()
