"""A ``deeprun-tune`` study's figures, drawn by Optuna's own matplotlib visualisations, beside ``trials.md``:

- ``optimization_history.png``: each trial's value and the best so far;
- ``intermediate_values.png``: each trial's metric per epoch (what the pruner saw; pruned trials end early);
- ``param_importances.png``: how much each searched field explains the value (PED-ANOVA: Optuna's own
  evaluator, no scikit-learn).

A figure the study cannot have yet (no finished trial, one parameter's importances with a single
distinct value) is skipped, with the reason returned.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deeprun.files import write_figure


def _importances(study: Any) -> Any:
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization.matplotlib import plot_param_importances

    return plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator())


def _history(study: Any) -> Any:
    from optuna.visualization.matplotlib import plot_optimization_history

    return plot_optimization_history(study)


def _intermediate(study: Any) -> Any:
    from optuna.visualization.matplotlib import plot_intermediate_values

    return plot_intermediate_values(study)


#: File name → the visualisation that draws it (each returns matplotlib Axes).
STUDY_FIGURES: dict[str, Callable[[Any], Any]] = {
    "optimization_history.png": _history,
    "intermediate_values.png": _intermediate,
    "param_importances.png": _importances,
}


def study_figures(study: Any, folder: Path) -> dict[str, str]:
    """Write :data:`STUDY_FIGURES` into ``folder``; returns, for each figure not written, why."""
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return dict.fromkeys(STUDY_FIGURES, "no complete trial yet")
    skipped = {}
    for name, draw in STUDY_FIGURES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # Optuna marks its matplotlib figures so
            try:
                axes = draw(study)
            except (ValueError, RuntimeError) as error:  # e.g. importances of a single distinct value
                skipped[name] = str(error)
                continue
        figure = axes.figure
        figure.tight_layout()
        write_figure(figure, Path(folder) / name)
        plt.close(figure)  # Optuna draws through pyplot: its figures stay open until closed
    return skipped
