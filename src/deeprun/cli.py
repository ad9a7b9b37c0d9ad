"""The ``deeprun`` command: Hydra composes the config, everything else is plain Python.

config → validated settings → data + model + optimizer → compiled epochs → run folder.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from deeprun.registry import ConfigError

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


def fail(message: str, run_dir: Path | None = None) -> None:
    """Print one error line and exit 2; remove the run folder Hydra made if nothing else is in it."""
    print(f"deeprun: error: {message}", file=sys.stderr)
    if run_dir is not None and run_dir.exists() and {p.name for p in run_dir.iterdir()} <= {".hydra"}:
        shutil.rmtree(run_dir, ignore_errors=True)
    sys.exit(EXIT_BAD_INPUT)


def run(cfg: DictConfig) -> dict:
    """Validate, load, train and write one run's folder; returns the summary."""
    from deeprun.settings import settings_from_config

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        settings = settings_from_config(OmegaConf.to_container(cfg, resolve=True))
        dataset = settings.data.load()
    except ConfigError as error:
        fail(str(error), run_dir)

    from deeprun.progress import EpochProgress, console, results_table
    from deeprun.runs import RunFolder
    from deeprun.train import fit

    start = time.perf_counter()
    folder = RunFolder(run_dir)
    console.print(f"[bold]deeprun[/] {settings.name}: {dataset.name} "
                  f"({len(dataset.y_train):,} train / {len(dataset.y_val):,} val / {len(dataset.y_test):,} test)")
    with EpochProgress(settings.trainer.epochs, settings.name) as progress:
        result = fit(settings, dataset, callbacks=[folder.append_metrics, progress])
    summary = folder.finish(result, settings.name, time.perf_counter() - start,
                            checkpoint=settings.trainer.checkpoint, plots=settings.trainer.plots)
    console.print(results_table(summary))
    console.print(f"run folder: {run_dir}")
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    summary = run(cfg)
    # In a sweep a diverged job is recorded in its summary and the sweep goes on.
    if summary["status"] == "diverged" and HydraConfig.get().mode == RunMode.RUN:
        print(f"deeprun: run diverged at epoch {summary['diverged_epoch']} (NaN/inf loss)", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
