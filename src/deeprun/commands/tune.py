"""``deeprun-tune``: an Optuna study over composed deeprun configs."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from deeprun.commands.common import JOB, fail, run_hydra_app, stop_on_interrupt
from deeprun.exit_codes import ExitCode
from deeprun.registry import ConfigError, plain_mapping
from deeprun.reports.study import STUDY_FIGURES
from deeprun.settings import CONFIG_DIR
from deeprun.sweeps.tune_space import STUDY_DB, TRIALS_CSV, TRIALS_MD, Compose, TuneOptions, tune_options
from deeprun.sweeps.tuning import Interrupted, best_trial, cell, run_study, trial_rows


def results_table(study, options: TuneOptions):
    """A Rich table of the trials (status, value, best epoch, epochs, seconds, parameters), the best in bold."""
    from rich.table import Table

    best = best_trial(study)
    table = Table(title=f"Study {study.study_name}: {options.optuna_direction} {options.metric}")
    headers = {
        "number": "#",
        "status": "status",
        "value": options.metric,
        "best_epoch": "best epoch",
        "epochs": "epochs",
        "duration_s": "seconds",
        **{path: path for path in options.space},
    }
    for column, header in headers.items():
        table.add_column(header, justify="left" if column == "status" else "right", overflow="fold")
    for row in trial_rows(study, options):
        style = "bold" if best is not None and row["number"] == best.number else None
        table.add_row(*(cell(row[column], markdown=True) for column in headers), style=style)
    table.caption = (
        "no trial completed"
        if best is None
        else f"best: trial {best.number}, {options.metric} {best.value:.4f} "
        f"(epoch {best.user_attrs.get('best_epoch')}), {best.user_attrs.get('run_dir')}"
    )
    return table


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def hydra_compose(config_name: str, overrides: Sequence[str]) -> Compose:
    """A :data:`Compose` for the running Hydra app: its command-line overrides plus the trial's."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    def compose_trial(groups: Sequence[str]) -> dict[str, Any]:
        try:
            cfg = compose(config_name=config_name, overrides=[*overrides, *groups])
        except (HydraException, OmegaConfBaseException) as error:
            raise ConfigError(" ".join(str(error).split())) from None
        config = plain_mapping(cfg)
        config.pop("tune")
        return config

    return compose_trial


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="tune")
def _main(cfg: DictConfig) -> None:
    from deeprun.commands.console import console

    JOB.started = True
    hydra_cfg = HydraConfig.get()
    sweep_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        options = tune_options(plain_mapping(cfg.tune))
        compose = hydra_compose(str(hydra_cfg.job.config_name), list(hydra_cfg.overrides.task))
        with stop_on_interrupt() as stop:
            study = run_study(
                options,
                compose,
                sweep_dir,
                stop=stop,
                log=lambda line: console.print(line, markup=False, soft_wrap=True),
            )
    except ConfigError as error:
        fail(str(error))
    except Interrupted as error:
        print(f"deeprun-tune: {error}", file=sys.stderr)
        sys.exit(ExitCode.INTERRUPTED)
    console.print(results_table(study, options))
    console.print(
        f"sweep folder: {sweep_dir} ({STUDY_DB}, {TRIALS_CSV}, {TRIALS_MD}, {', '.join(STUDY_FIGURES)}, trials/)"
    )


def main() -> None:
    """``deeprun-tune``."""
    run_hydra_app(_main, "deeprun-tune")


if __name__ == "__main__":
    main()
