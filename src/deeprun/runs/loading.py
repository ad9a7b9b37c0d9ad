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
from deeprun.training.state import TrainState
from deeprun.training.transfer import Donor


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
    if not config_file.is_file() or not summary_file.is_file():
        raise ConfigError(f"{run_dir} is not a deeprun run folder (no .hydra/config.yaml or summary.json)")
    if not (run_dir / "checkpoint").is_dir():
        raise ConfigError(f"{run_dir} has no checkpoint (was it run with trainer.checkpoint=false?)")
    settings = settings_from_config(plain_mapping(config_file))
    data = json.loads(summary_file.read_text())["data"]
    # The structure alone: a transfer run's donor (model.init_from) is not needed to read it back.
    like = state_structure(settings, data["n_features"], data["n_classes"])
    state = restore_state(run_dir / "checkpoint", like)
    return LoadedRun(run_dir, settings, data["n_features"], data["n_classes"], state)


def load_donor(init_from: str) -> Donor:
    """The trained variables of the run in ``model.init_from`` (ConfigError if it is not a finished run)."""
    from deeprun.registry import ConfigError, require

    source = Path(init_from)
    require(source.is_dir(), "model.init_from", "must be an existing run folder", init_from)
    require((source / "checkpoint").is_dir(), "model.init_from", "has no checkpoint/", init_from)
    try:
        state = load_run(Path(init_from)).state
    except ConfigError as error:
        raise ConfigError(f"model.init_from: {error}") from None
    return Donor(state.params, state.batch_stats)


_MISSING = object()


def resumed_config(run_dir: Path, overrides: list[str], current: dict[str, Any]) -> dict[str, Any]:
    """The saved config of the unfinished run in ``run_dir``, for ``trainer.resume=<run_dir>``.

    A resumed run keeps its own config. Every other override given with ``trainer.resume`` must agree
    with it: either it is one of the run's original overrides, or ``current`` (the config composed
    with the overrides) has the same value at its key as the saved config. ConfigError otherwise, and
    if the folder is not a run, has finished, or has no per-epoch checkpoint.
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
    if EpochCheckpoints(run_dir / RESUME_DIR).latest_epoch() is None:
        raise ConfigError(
            f"trainer.resume: {run_dir} has no per-epoch checkpoint in {RESUME_DIR}/ (it stopped "
            "before its first epoch ended, or ran with trainer.checkpoint=false)"
        )
    saved = plain_mapping(config_file)
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


def _select(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node
