"""``logger=mlflow``: each run an MLflow run (through ``MlflowClient``: runs fused in one process log side
by side, with no active-run state), a sweep's or a study's jobs nested under one parent run.

A run's MLflow run has
- params: the run's config flattened (``optimizer.learning_rate``, ``model.hidden`` as JSON text);
- metrics: every epoch's numbers at step = epoch (the tags of ``metrics.jsonl``: ``train/loss``,
  ``val/accuracy``, ``lr``, ...), then ``test/loss`` and ``test/accuracy`` at the last epoch's step;
- tags: ``deeprun.status`` (the summary's), ``deeprun.version``, ``deeprun.run_dir``,
  ``mlflow.source.git.commit`` (a checkout's commit), ``mlflow.parentRunId`` for a job;
- artifacts: the run folder's files (config, summary, metrics, plots, checkpoint) when it ends;
- status: FINISHED (completed), KILLED (interrupted, pruned), FAILED (diverged, failed).

``<run>/mlflow.json`` records the store and the run's id: a resumed run (``trainer.resume``, a continued
sweep) continues the same MLflow run, in the same store. ``<sweep>/mlflow.json`` records the parent run,
created by the sweep's first job (under a lock: jobs start in several processes) and ended by
:func:`finish_parent` when the sweep ends. A failing store never stops training: one warning, and the
run's own files stay its record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from deeprun.files import write_json
from deeprun.loggers import RunLog, epoch_scalars, flat_hparams, test_metrics
from deeprun.version import __version__

#: In a run folder: its MLflow run; in a sweep folder: the sweep's parent run.
RUN_FILE = "mlflow.json"
#: MLflow's statuses for deeprun's.
STATUSES = {
    "completed": "FINISHED",
    "interrupted": "KILLED",
    "pruned": "KILLED",
    "diverged": "FAILED",
    "failed": "FAILED",
}
# MLflow's limits per log_batch call.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000


class MLflowLog(RunLog):
    """One run's MLflow run."""

    def __init__(
        self,
        run_dir: Path,
        config: Mapping[str, Any],
        tracking_uri: str,
        experiment: str,
        artifacts: bool,
        sweep_dir: Path | None,
        label: str,
    ):
        self.run_dir = run_dir
        self.artifacts = artifacts
        self._ended = False
        self.client: Any = None
        self.run_id = ""
        try:
            self._open(config, tracking_uri, experiment, sweep_dir, label)
        except Exception as error:
            self._failed(error)

    def _open(
        self, config: Mapping[str, Any], tracking_uri: str, experiment: str, sweep_dir: Path | None, label: str
    ) -> None:
        from mlflow.entities import Param

        recorded = _read(self.run_dir / RUN_FILE)
        if recorded is not None:  # a resumed run: the same MLflow run, in the store it was created in
            self.client = _client(recorded["tracking_uri"])
            self.run_id = recorded["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        with _setup_lock(tracking_uri, sweep_dir):
            client = _client(tracking_uri)
            parent = _parent(client, tracking_uri, experiment, sweep_dir) if sweep_dir is not None else None
            experiment_id = parent["experiment_id"] if parent else _experiment_id(client, tracking_uri, experiment)
        tags = {"deeprun.version": __version__, "deeprun.run_dir": str(self.run_dir.resolve())}
        if parent:
            tags["mlflow.parentRunId"] = parent["run_id"]
        run = client.create_run(experiment_id, tags=tags, run_name=label)
        self.client, self.run_id = client, run.info.run_id
        params = [Param(key, str(value)) for key, value in flat_hparams(config).items()]
        for start in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=params[start : start + _PARAMS_PER_BATCH])
        record = {"tracking_uri": tracking_uri, "experiment_id": experiment_id, "run_id": self.run_id}
        write_json(self.run_dir / RUN_FILE, record)

    def epoch(self, record: dict[str, Any]) -> None:
        self._metrics(epoch_scalars(record), record["epoch"])

    def finish(self, summary: dict[str, Any]) -> None:
        if self.client is None:
            return
        self._metrics(test_metrics(summary), summary["epochs_completed"])
        if self.client is None:  # the store failed just now (said once)
            return
        try:
            tags = {"deeprun.status": summary["status"]}
            commit = (summary.get("source") or {}).get("git_commit")
            if commit:
                tags["mlflow.source.git.commit"] = commit
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, value)
            if self.artifacts:
                self.client.log_artifacts(self.run_id, str(self.run_dir))
            self.client.set_terminated(self.run_id, STATUSES.get(summary["status"], "FAILED"))
            self._ended = True
        except Exception as error:
            self._failed(error)

    def close(self) -> None:
        if self.client is not None and not self._ended:
            with contextlib.suppress(Exception):
                self.client.set_terminated(self.run_id, "FAILED")
            self._ended = True

    def _metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if self.client is None:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        try:
            for start in range(0, len(metrics), _METRICS_PER_BATCH):
                self.client.log_batch(self.run_id, metrics=metrics[start : start + _METRICS_PER_BATCH])
        except Exception as error:
            self._failed(error)

    def _failed(self, error: Exception) -> None:
        """The store failed: say so once and log nothing more (training goes on)."""
        print(
            f"deeprun: warning: mlflow: {type(error).__name__}: {error}; nothing more is logged to MLflow for "
            f"{self.run_dir} (its folder keeps every record)",
            file=sys.stderr,
        )
        self.client = None


def finish_parent(sweep_dir: Path, status: str) -> None:
    """End the sweep's parent run with the sweep's ``status``; its summary files become its artifacts."""
    recorded = _read(sweep_dir / RUN_FILE)
    if recorded is None:
        return
    client = _client(recorded["tracking_uri"])
    for path in sorted(sweep_dir.iterdir()):
        if path.is_file() and path.suffix in (".csv", ".md", ".png", ".yaml"):
            client.log_artifact(recorded["run_id"], str(path))
    client.set_terminated(recorded["run_id"], STATUSES.get(status, "FAILED"))


def open_parent(sweep_dir: Path, tracking_uri: str, experiment: str) -> None:
    """Create the sweep's parent run (a study's: before its first trial), unless it exists; a failing
    store is one warning (its jobs then try on their own)."""
    try:
        with _setup_lock(tracking_uri, sweep_dir):
            _parent(_client(tracking_uri), tracking_uri, experiment, sweep_dir)
    except Exception as error:
        print(
            f"deeprun: warning: mlflow: {type(error).__name__}: {error}; no parent run for {sweep_dir}", file=sys.stderr
        )


def _parent(client: Any, tracking_uri: str, experiment: str, sweep_dir: Path) -> dict[str, Any]:
    """The sweep's parent run: created by the first job, found by the others (under :func:`_setup_lock`)."""
    recorded = _read(sweep_dir / RUN_FILE)
    if recorded is not None:
        if client.get_run(recorded["run_id"]).info.status != "RUNNING":  # a continued sweep
            client.update_run(recorded["run_id"], status="RUNNING")
        return recorded
    experiment_id = _experiment_id(client, tracking_uri, experiment)
    tags = {"deeprun.version": __version__, "deeprun.sweep_dir": str(sweep_dir.resolve())}
    run = client.create_run(experiment_id, tags=tags, run_name=f"{experiment} {sweep_dir.name}")
    recorded = {"tracking_uri": tracking_uri, "experiment_id": experiment_id, "run_id": run.info.run_id}
    write_json(sweep_dir / RUN_FILE, recorded)
    return recorded


def _experiment_id(client: Any, tracking_uri: str, name: str) -> str:
    """The experiment's id, created if new; a local store keeps its artifacts beside its database."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    database = _sqlite_path(tracking_uri)
    location = None if database is None else (database.parent / "mlartifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # their INFO lines (database migrations, run links) are not ours
        logging.getLogger(name).setLevel(logging.WARNING)
    database = _sqlite_path(tracking_uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri)


@contextlib.contextmanager
def _setup_lock(tracking_uri: str, sweep_dir: Path | None) -> Iterator[None]:
    """Held while a run finds or creates its experiment and parent: a new SQLite database is created by
    one process (its migrations would race), a sweep's parent by one job."""
    database = _sqlite_path(tracking_uri)
    path = database.with_name(database.name + ".lock") if database is not None else None
    if path is None and sweep_dir is not None:
        path = sweep_dir / ".mlflow.lock"
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a SQLite store (``sqlite:///relative.db``, ``sqlite:////absolute.db``, as
    SQLAlchemy reads them); None for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").partition("?")[0])


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None
