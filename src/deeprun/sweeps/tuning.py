"""``deeprun-tune [overrides]``: hyperparameter search with Optuna over any deeprun config.

The ``tune`` section of ``conf/tune.yaml`` says what to search: ``space`` maps a dotted config path
(``optimizer.learning_rate``) or a config group (``optimizer``) to a distribution, ``metric`` is the
validation metric to optimize. Each trial samples the space, composes the config with the sampled group
choices, sets the sampled fields, validates it like any run and trains it into its own run folder
``<sweep>/trials/<number>/``. After every epoch the trial reports the metric to Optuna; the median pruner
stops a trial whose value at epoch e is worse than the median of the earlier trials at epoch e. A trial's
value is its best epoch's metric (``max`` or ``min`` over the epochs, by the study's direction).

The study is stored in ``<sweep>/study.db`` (SQLite). Running the command again on the same folder
(``tune.dir=<sweep>``) continues it up to ``tune.n_trials``: a trial the crashed process left running
is marked failed and its parameters are tried again. ``trials.csv`` and ``trials.md`` are rewritten after
every trial, so a crash loses at most the trial in progress.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from deeprun.registry import ConfigError, require
from deeprun.runs.ownership import claim
from deeprun.sweeps.tune_space import (
    RETRIED,
    STUDY_DB,
    TRIALS_CSV,
    TRIALS_MD,
    Compose,
    Dimension,
    TuneOptions,
    check_space,
    is_group,
    set_path,
)
from deeprun.training.loop import StopRequest
from deeprun.training.trainer import configure_compilation_cache

# --------------------------------------------------------------------------------------------------
# One trial
# --------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How a trial's run ended: ``status`` is the run's (completed, stopped_early, diverged,
    interrupted) or the trial's (pruned, invalid, failed)."""

    status: str
    value: float | None = None
    best_epoch: int | None = None
    epochs: int = 0
    error: str | None = None


class _Reporter:
    """Epoch callback: report the metric to Optuna (step = epoch), keep the best and last epochs, and
    stop the run by raising ``optuna.TrialPruned`` when the pruner says so."""

    def __init__(self, trial, metric: str, maximize: bool):
        self.trial, self.metric, self.maximize = trial, metric, maximize
        self.best: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None

    @property
    def value(self) -> float | None:
        return None if self.best is None else self.best[self.metric]

    @property
    def best_epoch(self) -> int | None:
        return None if self.best is None else self.best["epoch"]

    @property
    def epochs(self) -> int:
        return 0 if self.last is None else self.last["epoch"]

    def __call__(self, record: dict[str, Any]) -> None:
        import optuna

        self.last, value = record, record[self.metric]
        if not all(math.isfinite(record[key]) for key in ("train/loss", "val/loss", self.metric)):
            return  # the trainer ends the run as diverged right after its callbacks: nothing to rank
        if self.value is None or (value > self.value if self.maximize else value < self.value):
            self.best = record
        self.trial.report(value, record["epoch"])
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {record['epoch']}")

    def pruned_summary(self, name: str, wall_time_s: float) -> dict[str, Any]:
        """``summary.json`` of a pruned run: its last and best epochs (by the tuned metric)."""

        def metrics(record):
            return None if record is None else {k: v for k, v in record.items() if "/" in k}

        from deeprun.runs.folder import SUMMARY_SCHEMA_VERSION

        return {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "name": name,
            "status": "pruned",
            "epochs_completed": self.epochs,
            "best_epoch": self.best_epoch,
            "final": metrics(self.last),
            "best": metrics(self.best),
            "wall_time_s": wall_time_s,
        }


def sample(space: Mapping[str, Dimension], trial) -> tuple[list[str], dict[str, Any]]:
    """The trial's group overrides (``optimizer=adam``) and field values (``{path: value}``)."""
    groups, fields = [], {}
    for path, dimension in space.items():
        value = dimension.suggest(trial, path)
        if is_group(path):
            groups.append(f"{path}={value}")
        else:
            fields[path] = value
    return groups, fields


def trial_config(compose: Compose, groups: Sequence[str], fields: Mapping[str, Any], number: int) -> dict[str, Any]:
    """The deeprun config of trial ``number``: the command's config with the sampled groups and fields,
    named ``<name> trial <number>`` (its summary's and plots' title)."""
    config = compose(groups)
    for path, value in fields.items():
        config = set_path(config, path, value)
    return {**config, "name": f"{config.get('name', 'tune')} trial {number}"}


def _write_hydra_files(run_dir: Path, config: dict[str, Any] | None, overrides: list[str]) -> None:
    """``.hydra/config.yaml`` and ``overrides.yaml`` as a deeprun run has them, so ``deeprun-eval``,
    ``load_run`` and ``deeprun-report`` read a trial like any run."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")
    if config is not None:
        OmegaConf.save(OmegaConf.create(config), hydra_dir / "config.yaml")


class _DatasetCache:
    """The last dataset loaded: trials that share the data settings load it once."""

    def __init__(self) -> None:
        self.spec, self.dataset = None, None

    def load(self, spec):
        if self.dataset is None or spec != self.spec:
            self.spec, self.dataset = spec, spec.load()
        return self.dataset


def run_trial(
    trial,
    options: TuneOptions,
    compose: Compose,
    run_dir: Path,
    datasets: _DatasetCache,
    stop: StopRequest | None = None,
    study_dir: Path | None = None,
) -> Outcome:
    """Train one trial into ``run_dir`` (a job of the study in ``study_dir``, for the loggers); never
    raises for a bad sample or a failing run."""
    import optuna

    from deeprun.files import write_json
    from deeprun.runs.folder import RunFolder, write_failure
    from deeprun.settings import complete_config, settings_from_config
    from deeprun.training.loop import fit

    groups, fields = sample(options.space, trial)
    overrides = [*groups, *(f"{path}={value}" for path, value in fields.items())]
    try:
        config = trial_config(compose, groups, fields, trial.number)
        settings = settings_from_config(config)
    except ConfigError as error:
        _write_hydra_files(run_dir, None, overrides)
        write_failure(run_dir, f"trial {trial.number}", error)
        return Outcome("invalid", error=str(error))
    _write_hydra_files(run_dir, complete_config(config), overrides)
    folder = RunFolder(run_dir)
    reporter = _Reporter(trial, options.metric, options.optuna_direction == "maximize")
    log = settings.logger.open(run_dir, config, study_dir, f"trial {trial.number}")
    start = time.perf_counter()
    try:
        configure_compilation_cache(settings.trainer.compilation_cache)
        result = fit(
            settings, datasets.load(settings.data), [folder.append_metrics, log.epoch, reporter], log.saver, stop=stop
        )
    except optuna.TrialPruned:
        summary = reporter.pruned_summary(settings.name, time.perf_counter() - start)
        write_json(run_dir / "summary.json", summary)
        log.finish(summary)
        return Outcome("pruned", reporter.value, reporter.best_epoch, reporter.epochs)
    except Exception as error:
        log.close()
        write_failure(run_dir, settings.name, error)
        return Outcome("failed", epochs=reporter.epochs, error=f"{type(error).__name__}: {error}")
    except BaseException:  # Ctrl-C outside the epochs: close the event files, the study records the rest
        log.close()
        raise
    trainer = settings.trainer
    log.finish(
        folder.finish(
            result, settings.name, time.perf_counter() - start, checkpoint=trainer.checkpoint, plots=trainer.plots
        )
    )
    return Outcome(result.status, reporter.value, reporter.best_epoch, len(result.history))


def record(study, trial, outcome: Outcome, run_dir: Path) -> None:
    """Tell Optuna how the trial ended. A diverged trial counts as pruned (its last finite epoch value,
    if any, ranks it), so the sampler learns to avoid the region; an interrupted one fails and is
    queued again."""
    from optuna.trial import TrialState

    for key, value in (
        ("status", outcome.status),
        ("best_epoch", outcome.best_epoch),
        ("epochs", outcome.epochs),
        ("error", outcome.error),
        ("run_dir", str(run_dir)),
    ):
        trial.set_user_attr(key, value)
    if outcome.status in ("completed", "stopped_early"):
        study.tell(trial, outcome.value)
    elif outcome.status in ("pruned", "diverged"):
        study.tell(trial, state=TrialState.PRUNED)
    else:
        if outcome.status in RETRIED:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        study.tell(trial, state=TrialState.FAIL)


# --------------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------------


def trial_status(frozen) -> str:
    """A finished trial's status; a trial failed without one was left running by a crashed process."""
    return frozen.user_attrs.get("status", "crashed")


def counted_trials(study) -> int:
    """Trials that count towards ``n_trials``: finished ones, except those cut off by the process."""
    from optuna.trial import TrialState

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return sum(trial_status(t) not in RETRIED for t in finished)


def make_sampler(options: TuneOptions, offset: int):
    """The sampler, seeded with ``seed + offset``: a resumed study (offset = its trials so far) draws
    new points rather than repeating the first run's random start."""
    import optuna

    seed = options.seed + offset
    if options.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(options: TuneOptions):
    import optuna

    if options.pruner == "none":
        return optuna.pruners.NopPruner()
    # Steps are 1-based epochs and Optuna prunes from step n_warmup_steps on: +1 skips `warmup` epochs.
    return optuna.pruners.MedianPruner(
        n_startup_trials=options.pruner_startup_trials, n_warmup_steps=options.pruner_warmup_epochs + 1
    )


def open_study(sweep_dir: Path, options: TuneOptions, name: str):
    """Create ``<sweep_dir>/study.db``'s study, or load the one it holds (checking metric and direction)."""
    import optuna

    sweep_dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{sweep_dir.resolve() / STUDY_DB}"
    existing = optuna.get_all_study_summaries(storage)
    direction = options.optuna_direction
    if existing:
        summary = existing[0]
        stored_metric = summary.user_attrs.get("metric")
        require(
            stored_metric == options.metric,
            "tune.metric",
            f"must be the study's metric in {sweep_dir} ({stored_metric})",
            options.metric,
        )
        require(
            summary.direction.name.lower() == direction,
            "tune.direction",
            f"must be the study's direction in {sweep_dir} ({summary.direction.name.lower()})",
            direction,
        )
    study = optuna.create_study(
        storage=storage,
        study_name=existing[0].study_name if existing else name,
        direction=direction,
        sampler=make_sampler(options, existing[0].n_trials if existing else 0),
        pruner=make_pruner(options),
        load_if_exists=True,
    )
    if not existing:
        study.set_user_attr("metric", options.metric)
    return study


def retry_abandoned(study) -> list[int]:
    """Trials still marked running were cut off by a crash (one process drives a sweep folder at a
    time): mark them failed and queue their parameters again. Returns their numbers."""
    from optuna.trial import TrialState

    abandoned = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in abandoned:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        study.tell(trial.number, state=TrialState.FAIL)
    return [trial.number for trial in abandoned]


class Interrupted(Exception):
    """Ctrl-C stopped a trial; the study is saved and the trial queued again."""


def run_study(
    options: TuneOptions,
    compose: Compose,
    sweep_dir: Path,
    log: Callable[[str], None] = print,
    stop: StopRequest | None = None,
):
    """Run (or resume) the study in ``sweep_dir`` until ``options.n_trials`` trials count; returns it.
    Raises ConfigError for a bad space or a mismatched study, Interrupted after a Ctrl-C."""
    import optuna

    from deeprun.loggers import finish_sweep
    from deeprun.settings import settings_from_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # deeprun prints its own line per trial
    sweep_dir = Path(sweep_dir)
    base = compose([])
    base_settings = settings_from_config(base)  # a bad value in the command fails once here, not in every trial
    check_space(options.space, base)
    claim(sweep_dir)  # one process per study folder: another would take this one's running trials for crashed ones
    study = open_study(sweep_dir, options, str(base.get("name", "tune")))
    for number in retry_abandoned(study):
        log(f"trial {number} was cut off by a crash: marked failed, its parameters queued again")
    write_tables(study, options, sweep_dir)
    base_settings.logger.open_sweep(sweep_dir, base)
    if study.get_trials(deepcopy=False):
        log(f"resuming the study in {sweep_dir}: {counted_trials(study)} of {options.n_trials} trials done")
    datasets = _DatasetCache()
    while counted_trials(study) < options.n_trials:
        trial = study.ask()
        run_dir = sweep_dir / "trials" / str(trial.number)
        try:
            outcome = run_trial(trial, options, compose, run_dir, datasets, stop, sweep_dir)
        except KeyboardInterrupt:  # outside the epochs (compiling, writing): the trial is lost
            outcome = Outcome("interrupted")
        record(study, trial, outcome, run_dir)
        write_tables(study, options, sweep_dir)
        log(trial_line(study.trials[trial.number], options))
        if outcome.status == "interrupted":
            _draw_figures(study, sweep_dir, log)
            finish_sweep(sweep_dir, "interrupted")
            raise Interrupted(
                f"interrupted in trial {trial.number}; run the same command with tune.dir={sweep_dir} to resume"
            )
    _draw_figures(study, sweep_dir, log)
    finish_sweep(sweep_dir, "completed")
    return study


def _draw_figures(study, sweep_dir: Path, log: Callable[[str], None]) -> None:
    """The study's figures beside trials.md (``deeprun.reports.study``); one line per figure not drawn."""
    from deeprun.reports.study import study_figures

    for name, reason in study_figures(study, sweep_dir).items():
        log(f"{name} not drawn: {reason}")


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def trial_rows(study, options: TuneOptions) -> list[dict[str, Any]]:
    """One row per trial that started: number, state, status, value, best epoch, epochs, duration,
    the parameters and the error, if any."""
    from optuna.trial import TrialState

    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.WAITING:
            continue
        status = trial_status(trial) if trial.state.is_finished() else "running"
        # A crashed trial's end is when the next process found it, not when it stopped.
        timed = trial.duration is not None and status != "crashed"
        row = {
            "number": trial.number,
            "state": trial.state.name.lower(),
            "status": status,
            "value": trial.value,
            "best_epoch": trial.user_attrs.get("best_epoch"),
            "epochs": trial.user_attrs.get("epochs"),
            "duration_s": trial.duration.total_seconds() if timed else None,
        }
        row.update({path: trial.params.get(path) for path in options.space})
        row["error"] = trial.user_attrs.get("error")
        rows.append(row)
    return rows


def best_trial(study):
    """The best complete trial, or None (every trial pruned or failed)."""
    from optuna.trial import TrialState

    return study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None


def cell(value: Any, markdown: bool) -> str:
    if value is None:
        return "–" if markdown else ""
    if isinstance(value, float):
        return f"{value:.4g}" if markdown else repr(value)
    return str(value).replace("|", "\\|") if markdown else str(value)


def trials_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[cell(row[c], markdown=False) for c in columns] for row in rows])
    return buffer.getvalue()


def trials_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str, best) -> str:
    lines = [f"# {title}", ""]
    if best is not None:
        lines += [
            f"Best: trial {best.number}, value {best.value:.4g}, "
            + ", ".join(f"`{k}={v}`" for k, v in best.params.items())
            + ".",
            "",
        ]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" if c in ("state", "status", "error") else "---:" for c in columns) + "|")
    lines += ["| " + " | ".join(cell(row[c], markdown=True) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _columns(options: TuneOptions) -> list[str]:
    return ["number", "state", "status", "value", "best_epoch", "epochs", "duration_s", *options.space, "error"]


def write_tables(study, options: TuneOptions, sweep_dir: Path) -> None:
    """``trials.csv`` and ``trials.md`` in the sweep folder (atomically: a crash leaves the last ones)."""
    from deeprun.files import write_text

    rows, columns = trial_rows(study, options), _columns(options)
    title = f"Study {study.study_name}: {options.optuna_direction} {options.metric}"
    write_text(sweep_dir / TRIALS_CSV, trials_csv(rows, columns))
    write_text(sweep_dir / TRIALS_MD, trials_markdown(rows, columns, title, best_trial(study)))


def trial_line(trial, options: TuneOptions) -> str:
    """One line per finished trial, for the console."""
    value = "" if trial.value is None else f" {options.metric} {trial.value:.4f}"
    epoch = trial.user_attrs.get("best_epoch")
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    error = f": {trial.user_attrs['error']}" if trial.user_attrs.get("error") else ""
    return (
        f"trial {trial.number}: {trial_status(trial)}{value}"
        f"{f' (best epoch {epoch})' if epoch else ''}  {params}{error}"
    )
