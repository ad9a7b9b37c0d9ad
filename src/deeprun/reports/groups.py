"""A sweep's runs by swept field and grouped over seeds.

The *swept fields* of a folder of runs are the overrides' keys whose values differ between runs
(``optimizer`` for ``optimizer=adam,nadam``, ``optimizer.learning_rate``, ``trainer.seed``); without
overrides (runs gathered by hand), the config fields that differ. Runs that agree on every swept field
but ``trainer.seed`` form one *group* (or, with ``deeprun-report --group-by F,G``, runs that agree on
F and G): its row has the count, the seeds, and per metric the mean, the sample standard deviation
(n − 1; 0 for one run), the minimum and the maximum over the group's runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deeprun.runs.records import RunRecord

SEED = "trainer.seed"
#: The metrics a group aggregates (columns of :data:`deeprun.runs.records.COLUMNS`).
GROUP_METRICS = (
    "epochs_completed",
    "final_train_loss",
    "final_train_accuracy",
    "final_val_loss",
    "final_val_accuracy",
    "best_val_loss",
    "best_val_accuracy",
    "test_loss",
    "test_accuracy",
)
#: Fields that say where a run is, not what it is.
_NOT_SWEPT = ("trainer.resume", "hydra")


def _override_key(token: str) -> str:
    return token.lstrip("+~").partition("=")[0]


def field_value(run: RunRecord, field: str) -> Any:
    """``field`` of ``run``'s saved config (a group name selects the option's ``name``), else the value its
    override gave, else None."""
    if field in run.config:
        return run.config[field]
    if f"{field}.name" in run.config:
        return run.config[f"{field}.name"]
    for token in run.override_list:
        if _override_key(token) == field:
            return token.partition("=")[2]
    return None


def swept_fields(runs: Sequence[RunRecord]) -> list[str]:
    """The fields whose values differ between ``runs``, in the order the overrides first name them."""
    keys = list(dict.fromkeys(_override_key(token) for run in runs for token in run.override_list))
    if not any(run.override_list for run in runs):
        keys = list(dict.fromkeys(key for run in runs for key in run.config))
    keys = [key for key in keys if not key.startswith(_NOT_SWEPT)]
    return [key for key in keys if len({repr(field_value(run, key)) for run in runs}) > 1]


@dataclass
class Group:
    """Runs that agree on ``key`` (field → value)."""

    key: dict[str, Any]
    runs: list[RunRecord]

    @property
    def label(self) -> str:
        return " ".join(f"{field}={_shown(value)}" for field, value in self.key.items()) or "all runs"

    def values(self, metric: str) -> list[float]:
        values = [run.value(metric) for run in self.runs]
        return [float(v) for v in values if isinstance(v, (int, float)) and v == v and abs(v) != float("inf")]

    def statistics(self, metric: str) -> dict[str, float | None]:
        values = self.values(metric)
        if not values:
            return {"mean": None, "std": None, "min": None, "max": None}
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


def group_fields(runs: Sequence[RunRecord], group_by: Sequence[str] | None = None) -> list[str] | None:
    """The fields runs are grouped by: ``group_by``, or every swept field but the seed when the seed is
    swept; None when the runs are not grouped."""
    if group_by is not None:
        return list(group_by)
    swept = swept_fields(runs)
    return [field for field in swept if field != SEED] if SEED in swept else None


def group_runs(runs: Sequence[RunRecord], fields: Sequence[str]) -> list[Group]:
    """``runs`` grouped by their values of ``fields``, groups in the order of their first run."""
    groups: dict[str, Group] = {}
    for run in runs:
        key = {field: field_value(run, field) for field in fields}
        groups.setdefault(repr(list(key.values())), Group(key, [])).runs.append(run)
    return list(groups.values())


def group_rows(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """One row per group: its fields, ``runs``, ``seeds`` and ``<metric>_{mean,std,min,max}``."""
    rows = []
    for group in groups:
        row: dict[str, Any] = {**{field: _shown(value) for field, value in group.key.items()}}
        row["runs"] = len(group.runs)
        row["seeds"] = " ".join(str(field_value(run, SEED)) for run in group.runs)
        for metric in GROUP_METRICS:
            row |= {f"{metric}_{name}": value for name, value in group.statistics(metric).items()}
        rows.append(row)
    return rows


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(_shown(item) for item in value) + "]"
    return "null" if value is None else str(value)
