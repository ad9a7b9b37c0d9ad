"""Composing deeprun's configs with Hydra's compose API, as the commands do."""

from __future__ import annotations

from collections.abc import Sequence

from hydra import compose, initialize_config_dir

from deeprun.registry import plain_mapping
from deeprun.settings import CONFIG_DIR, Settings, settings_from_config

# Small and quick: the synthetic dataset, one small hidden layer, no files.
FAST = ("data=synthetic", "model.hidden=[32]", "trainer.epochs=1", "trainer.checkpoint=false", "trainer.plots=false")


def compose_dict(overrides: Sequence[str] = ()) -> dict:
    """The composed job config as a plain dict (what the CLI hands to ``settings_from_config``)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return plain_mapping(cfg)


def fast_settings(*overrides: str, fast: bool = True) -> Settings:
    """:data:`FAST` overrides plus ``overrides``, validated (another ``model=`` drops FAST's ``model.*``)."""
    base = FAST if fast else ()
    if any(o.startswith("model=") for o in overrides):  # another model may have no `hidden` field
        base = tuple(o for o in base if not o.startswith("model."))
    return settings_from_config(compose_dict([*base, *overrides]))
