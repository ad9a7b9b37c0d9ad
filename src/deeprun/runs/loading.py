"""Reading a run folder back: a finished run's settings and final state (``load_run``), an unfinished run's
saved config for ``trainer.resume``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprun.registry import plain_mapping
from deeprun.runs.checkpoints import EpochCheckpoints, restore_state
from deeprun.runs.folder import FINISHED, RESUME_DIR
from deeprun.training.state import ResumePoint, TrainState
from deeprun.training.transfer import Donor, describe_layers


@dataclass
class LoadedRun:
    """A finished run read back from its folder: its settings, dataset dimensions and final state."""

    path: Path
    settings: Any
    n_features: int
    n_classes: int
    state: TrainState

    def model(self):
        from flax import nnx

        from deeprun.training.trainer import build_model

        abstract = nnx.eval_shape(lambda: build_model(self.settings, self.n_features, self.n_classes))
        return nnx.merge(nnx.graphdef(abstract), self.state.params, self.state.batch_stats)


def load_run(run_dir: Path) -> LoadedRun:
    """Read ``run_dir``'s config and checkpoint; ConfigError (one line) if it is not a finished run."""

    from deeprun.registry import ConfigError
    from deeprun.settings import settings_from_config
    from deeprun.training.trainer import state_structure

    run_dir = Path(run_dir)
    config_file, summary_file = run_dir / ".hydra" / "config.yaml", run_dir / "summary.json"
    if not config_file.is_file():
        raise ConfigError(f"{run_dir} is not a deeprun run folder (no .hydra/config.yaml)")
    if not summary_file.is_file():
        raise ConfigError(f"{run_dir} has not finished (no summary.json); continue it with trainer.resume={run_dir}")
    summary = _read_json(summary_file)
    status = summary.get("status")
    if status == "diverged":
        raise ConfigError(
            f"{run_dir} diverged at epoch {summary.get('diverged_epoch')} (NaN/inf loss): a diverged run keeps no checkpoint"
        )
    if not (run_dir / "checkpoint").is_dir():
        if status not in FINISHED:
            raise ConfigError(
                f"{run_dir} has not finished (status: {status}); continue it with trainer.resume={run_dir}"
            )
        raise ConfigError(f"{run_dir} has no checkpoint (it ran with trainer.checkpoint=false)")
    settings = settings_from_config(plain_mapping(config_file))
    data = summary.get("data") or {}
    if not {"n_features", "n_classes"} <= set(data):
        raise ConfigError(f"{summary_file} lacks the data's dimensions (data.n_features, data.n_classes)")
    # The structure alone: a transfer run's donor (model.init_from) is not needed to read it back.
    like = state_structure(settings, data["n_features"], data["n_classes"])
    state = restore_state(run_dir / "checkpoint", like)
    return LoadedRun(run_dir, settings, data["n_features"], data["n_classes"], state)


def _read_json(path: Path) -> dict[str, Any]:
    from deeprun.registry import ConfigError

    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} is unreadable: {error}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return value


def load_donor(init_from: str) -> Donor:
    """The trained variables of the run in ``model.init_from`` (ConfigError if it is not a finished run)."""
    from deeprun.registry import ConfigError, require

    source = Path(init_from)
    require(source.is_dir(), "model.init_from", "must be an existing run folder", init_from)
    require((source / "checkpoint").is_dir(), "model.init_from", "has no checkpoint/", init_from)
    try:
        run = load_run(Path(init_from))
    except ConfigError as error:
        raise ConfigError(f"model.init_from: {error}") from None
    return Donor(run.state.params, run.state.batch_stats, describe_layers(run.settings))


_MISSING = object()


def resumed_config(run_dir: Path, overrides: list[str], current: dict[str, Any]) -> dict[str, Any]:
    """The saved config of the unfinished run in ``run_dir``, for ``trainer.resume=<run_dir>``.

    A resumed run keeps its own config. Every other override given with ``trainer.resume`` must agree
    with it: either it is one of the run's original overrides, or ``current`` (the config composed
    with the overrides) has the same value at its key as the saved config. ConfigError otherwise, and
    if the folder is not a run or has finished. (A run with no finished epoch checkpoint starts again.)
    """
    from omegaconf import OmegaConf

    from deeprun.registry import ConfigError

    config_file, summary_file = run_dir / ".hydra" / "config.yaml", run_dir / "summary.json"
    if not config_file.is_file():
        raise ConfigError(f"trainer.resume: {run_dir} is not a deeprun run folder (no .hydra/config.yaml)")
    if summary_file.is_file():
        status = json.loads(summary_file.read_text()).get("status")
        if status in FINISHED:
            raise ConfigError(f"trainer.resume: {run_dir} has finished (status: {status}); nothing to resume")
    saved = _saved_config(run_dir)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    original = set(OmegaConf.load(overrides_file)) if overrides_file.is_file() else set()
    for override in overrides:
        key = override.lstrip("+~").partition("=")[0]
        if key in ("trainer.resume", "hydra") or key.startswith("hydra.") or override in original:
            continue
        saved_value, value = _select(saved, key), _select(current, key)
        if saved_value is _MISSING or value != saved_value:
            shown = "not set" if saved_value is _MISSING else json.dumps(saved_value)
            raise ConfigError(
                f"trainer.resume: {override} disagrees with the saved config of {run_dir} "
                f"({key}: {shown}); a resumed run keeps its config, drop the override"
            )
    saved.setdefault("trainer", {})["resume"] = str(run_dir)
    return saved


def _saved_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``.hydra/config.yaml``, validated; a folder killed while Hydra wrote it holds nothing
    else, and is run again rather than resumed."""
    from deeprun.registry import ConfigError
    from deeprun.runs.folder import holds_progress
    from deeprun.settings import settings_from_config

    try:
        saved = plain_mapping(run_dir / ".hydra" / "config.yaml")
        settings_from_config(saved)
    except Exception as error:
        if not holds_progress(run_dir):
            raise ConfigError(
                f"trainer.resume: {run_dir} holds no run yet (its .hydra/config.yaml is incomplete: stopped while "
                f"starting); run the command again with hydra.run.dir={run_dir}"
            ) from None
        raise ConfigError(f"trainer.resume: the saved config of {run_dir} is invalid: {error}") from None
    return saved


def _select(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def resume_epochs(run_dir: Path) -> list[int]:
    """The epochs an unfinished run in ``run_dir`` can resume after (0: from the start, always possible)."""
    return [0, *EpochCheckpoints(Path(run_dir) / RESUME_DIR).epochs()]


def load_resume_point(run_dir: Path, settings, n_features: int, n_classes: int, epoch: int) -> ResumePoint | None:
    """The point ``run_dir``'s run resumes from after ``epoch`` (0: None, from the start), read whole and
    checked against the structure of the run's saved config: ConfigError if it is damaged or does not fit."""
    from deeprun.training.trainer import state_structure

    if epoch == 0:
        return None
    like = state_structure(settings, n_features, n_classes)
    return EpochCheckpoints(Path(run_dir) / RESUME_DIR).load(like, epoch)
