"""Hydra callbacks (registered under ``hydra.callbacks`` in ``conf/config.yaml``).

Kept light to import: Hydra instantiates them for every ``deeprun`` command, single runs included.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """At the end of a sweep (``deeprun -m``), write the sweep's summary table and comparison figures
    into the sweep folder (:func:`deeprun.report.write_sweep_summary`). Never raises: a failure is
    logged as a warning and the sweep's exit status is unchanged."""

    def __init__(self, figures: bool = True) -> None:
        self.figures = figures

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            from deeprun.report import write_sweep_summary

            sweep_dir = Path(str(config.hydra.sweep.dir))
            csv_path, md_path = write_sweep_summary(sweep_dir, figures=self.figures)
            print(f"sweep summary: {md_path} ({csv_path.name})", flush=True)
        except Exception as error:  # noqa: BLE001 - a report must never fail the sweep
            log.warning("deeprun: could not write the sweep summary: %s: %s", type(error).__name__, error)
