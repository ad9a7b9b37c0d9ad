"""A run folder as a record for reports: its status, overrides, metrics and summary, whether it finished or not."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Columns of ``sweep_summary.csv`` (and, with shorter headers, of the Markdown table).
COLUMNS = (
    "job",
    "overrides",
    "status",
    "epochs_completed",
    "diverged_epoch",
    "final_train_loss",
    "final_train_accuracy",
    "final_val_loss",
    "final_val_accuracy",
    "best_epoch",
    "best_val_loss",
    "best_val_accuracy",
    "test_loss",
    "test_accuracy",
    "steady_epoch_time_s",
    "wall_time_s",
)


class NoRunsError(ValueError):
    """The folder holds no run folders."""


@dataclass
class RunRecord:
    """One run folder as read from disk. ``summary`` is None for a job that never finished."""

    path: Path
    job: str
    overrides: str = ""
    summary: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        """completed | stopped_early | diverged (from summary.json), else incomplete | missing."""
        if self.summary is not None:
            return str(self.summary.get("status", "unknown"))
        return "incomplete" if self.metrics else "missing"

    @property
    def override_list(self) -> list[str]:
        return self.overrides.split()

    @property
    def epochs_completed(self) -> int | None:
        if self.summary is not None and self.summary.get("epochs_completed") is not None:
            return int(self.summary["epochs_completed"])
        return len(self.metrics) if self.metrics else None

    @property
    def final(self) -> dict[str, Any]:
        """Final train/val metrics: the summary's, else the last recorded epoch's."""
        if self.summary is not None and self.summary.get("final"):
            return dict(self.summary["final"])
        return dict(self.metrics[-1]) if self.metrics else {}

    @property
    def best(self) -> dict[str, Any]:
        return dict(self.summary.get("best") or {}) if self.summary is not None else {}

    @property
    def test(self) -> dict[str, Any]:
        return dict(self.summary.get("test") or {}) if self.summary is not None else {}

    def value(self, column: str) -> Any:
        """The raw value of one of :data:`COLUMNS` (None when unknown)."""
        summary = self.summary or {}
        match column:
            case "job":
                return self.job
            case "overrides":
                return self.overrides
            case "status":
                return self.status
            case "epochs_completed":
                return self.epochs_completed
            case "diverged_epoch" | "best_epoch" | "steady_epoch_time_s" | "wall_time_s":
                return summary.get(column)
        section, _, rest = column.partition("_")
        if section in ("final", "best"):
            split, _, metric = rest.partition("_")
            return getattr(self, section).get(f"{split}/{metric}")
        if section == "test":
            return self.test.get(rest)
        raise KeyError(column)

    def row(self) -> dict[str, Any]:
        return {column: self.value(column) for column in COLUMNS}

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        """The run's saved config flattened to dotted fields (``optimizer.learning_rate``; lists as
        tuples, so they can be grouped by); {} when it has none or it cannot be read."""
        import yaml

        try:
            config = yaml.safe_load((self.path / ".hydra" / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return {}
        return flatten(config) if isinstance(config, dict) else {}


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"name": "adam", "betas": [1, 2]}}`` → ``{"optimizer.name": "adam", "optimizer.betas": (1, 2)}``;
    an empty mapping stays a field (``regularizer: {}`` → ``"regularizer": "{}"``)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        elif isinstance(value, dict):
            flat[name] = "{}"
        elif isinstance(value, list):
            flat[name] = tuple(_hashable(item) for item in value)
        else:
            flat[name] = value
    return flat


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def run_table_row(record: RunRecord) -> dict[str, Any]:
    """One run as a table row: where it is, how it ended, its config fields and its metrics."""
    summary = record.summary or {}
    row: dict[str, Any] = {
        "path": str(record.path),
        "job": record.job,
        "status": record.status,
        "epochs_completed": record.epochs_completed,
    }
    row |= record.config
    row |= {f"final.{key}": value for key, value in record.final.items() if key not in ("epoch", "step")}
    row |= {f"best.{key}": value for key, value in record.best.items()}
    row |= {f"test.{key}": value for key, value in record.test.items()}
    row |= {key: summary.get(key) for key in ("best_epoch", "steady_epoch_time_s", "wall_time_s")}
    return row


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _is_run_folder(path: Path) -> bool:
    """A training run's folder: ``summary.json``, or ``.hydra/`` whose config is a training run's (not
    ``deeprun-lr-finder``'s or ``-signal``'s, nor a ``deeprun-tune`` study's, whose trials are below it)."""
    if (path / "summary.json").is_file():
        return True
    if not (path / ".hydra").is_dir():
        return False
    import yaml

    try:
        config = yaml.safe_load((path / ".hydra" / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return True  # stopped while Hydra wrote it: a run that never started
    return not isinstance(config, dict) or ("trainer" in config and not {"lr_finder", "tune"} & set(config))


def _sort_key(relative: Path) -> tuple:
    """Natural order: integer folder names (job numbers) numerically, before other names."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in relative.parts)


def _find_run_folders(folder: Path) -> list[Path]:
    if _is_run_folder(folder):
        return [folder]
    found = []
    for root, dirs, _files in os.walk(folder):
        here = Path(root)
        keep = []
        for name in dirs:
            if name.startswith(".") or name == "checkpoint":
                continue
            child = here / name
            if _is_run_folder(child):
                found.append(child)  # do not descend into a run folder
            else:
                keep.append(name)
        dirs[:] = keep
    return found


def _read_overrides(path: Path) -> str:
    """The job's overrides as the user wrote them (without the ``++`` deeprun adds to a field override,
    see ``deeprun.commands.common.field_overrides``)."""
    file = path / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return ""
    import yaml

    try:
        overrides = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, OSError):
        return ""
    if isinstance(overrides, list):
        return " ".join(str(item).removeprefix("++") for item in overrides)
    return "" if overrides is None else str(overrides)


def _read_summary(path: Path) -> dict[str, Any] | None:
    file = path / "summary.json"
    try:
        summary = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def read_run(path: Path, job: str | None = None) -> RunRecord:
    """Read one run folder (summary.json, metrics.jsonl, .hydra/overrides.yaml; each may be absent)."""
    from deeprun.runs.folder import read_metrics

    path = Path(path)
    metrics_file = path / "metrics.jsonl"
    metrics = read_metrics(metrics_file) if metrics_file.is_file() else []
    return RunRecord(
        path=path,
        job=path.name if job is None else job,
        overrides=_read_overrides(path),
        summary=_read_summary(path),
        metrics=[record for record in metrics if isinstance(record, dict)],
    )


def collect_runs(folder: Path) -> list[RunRecord]:
    """Every run folder below ``folder`` (or ``folder`` itself when it is one), in job order.

    ``job`` is the folder's path relative to ``folder`` (a sweep's job number for its direct children).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    runs = []
    for path in _find_run_folders(folder):
        relative = path.relative_to(folder)
        job = relative.as_posix() if relative.parts else folder.name
        runs.append((relative, read_run(path, job)))
    runs.sort(key=lambda item: _sort_key(item[0]))
    return [record for _, record in runs]
