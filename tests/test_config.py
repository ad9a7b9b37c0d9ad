"""Composition (Hydra's compose API) and validation: defaults, presets, multi-select, bad values."""

from pathlib import Path

import pytest

from deeprun.registry import ConfigError
from deeprun.settings import CONFIG_DIR, settings_from_config
from helpers.configs import compose_dict


def test_default_is_the_books_default_dnn_configuration():
    """2nd ed. Table 11-3 on a [300, 100] MLP, Fashion-MNIST, batch 32, 10 epochs."""
    cfg = compose_dict()
    assert cfg["initializer"]["name"] == "he_normal"
    assert cfg["activation"]["name"] == "elu"
    assert cfg["normalization"]["name"] == "none"
    assert cfg["regularizer"] == {}
    assert cfg["trainer"]["early_stopping"]["enabled"] is True
    assert cfg["optimizer"]["name"] == "momentum"
    assert cfg["schedule"]["name"] == "1cycle"
    assert cfg["model"]["hidden"] == [300, 100]
    assert cfg["data"]["name"] == "fashion_mnist"
    assert (cfg["trainer"]["batch_size"], cfg["trainer"]["epochs"]) == (32, 10)
    settings = settings_from_config(cfg)
    assert settings.optimizer.learning_rate == 0.01 and settings.optimizer.momentum == 0.9


PRESETS = {  # preset: (initializer, activation, normalization, regularizer, optimizer, schedule)
    "ed2_default": ("he_normal", "elu", "none", {}, "momentum", "1cycle"),
    "ed2_self_normalizing": ("lecun_normal", "selu", "none", {}, "momentum", "1cycle"),
    "ed3_default": ("he_normal", "relu", "none", {}, "nesterov", "performance"),
    "ed3_self_normalizing": ("lecun_normal", "selu", "none", {}, "nesterov", "performance"),
    "ed2_early_release": ("lecun_normal", "selu", "none", {}, "nadam", "performance"),
    "ed1_default": (
        "he_normal",
        "elu",
        "batchnorm",
        {"dropout": {"rate": 0.2, "placement": "all"}},
        "adam",
        "constant",
    ),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_set_the_six_groups(preset):
    cfg = compose_dict([f"preset={preset}"])
    got = (
        cfg["initializer"]["name"],
        cfg["activation"]["name"],
        cfg["normalization"]["name"],
        cfg["regularizer"],
        cfg["optimizer"]["name"],
        cfg["schedule"]["name"],
    )
    assert got == PRESETS[preset]
    assert cfg["name"] == preset
    assert (cfg["data"]["scaling"] == "standardize") == (cfg["activation"]["name"] == "selu")
    settings_from_config(cfg)


def test_every_preset_file_is_tested():
    assert sorted(p.stem for p in Path(CONFIG_DIR, "preset").glob("*.yaml")) == sorted(PRESETS)


def test_command_line_beats_preset():
    cfg = compose_dict(["preset=ed3_default", "optimizer=adamw", "data.scaling=standardize"])
    assert cfg["optimizer"]["name"] == "adamw" and cfg["activation"]["name"] == "relu"
    assert cfg["data"]["scaling"] == "standardize"


def test_several_regularizers_from_the_group():
    cfg = compose_dict(["regularizer=[l2,dropout]", "regularizer.l2.factor=0.001"])
    assert cfg["regularizer"] == {"l2": {"factor": 0.001}, "dropout": {"rate": 0.2, "placement": "all"}}
    reg = settings_from_config(cfg).regularization
    assert reg.l2 == 0.001 and reg.dropout.rate == 0.2


BAD = [  # (overrides, message fragment)
    (["optimizer.learning_rate=-1"], "optimizer.learning_rate must be > 0 (got -1.0)"),
    (["optimizer.learning_rate=0"], "optimizer.learning_rate must be > 0 (got 0.0)"),
    (["optimizer.learning_rate=fast"], "optimizer.nesterov.learning_rate must be a number"),
    (["regularizer=dropout", "regularizer.dropout.rate=1.0"], "regularizer.dropout.rate must be in [0, 1)"),
    (["regularizer=dropout", "regularizer.dropout.rate=-0.1"], "regularizer.dropout.rate must be in [0, 1)"),
    (["model.hidden=[300,0]"], "model.hidden[1] must be > 0 (got 0)"),
    (["trainer.batch_size=0"], "trainer.batch_size must be > 0 (got 0)"),
    (["trainer.epochs=-3"], "trainer.epochs must be > 0 (got -3)"),
    (["trainer.early_stopping.patience=-1"], "trainer.early_stopping.patience must be >= 0 (got -1)"),
    (["trainer.early_stopping.monitor=val/f1"], "trainer.early_stopping.monitor must be one of"),
    (["+optimizer.lr=0.1"], "optimizer.nesterov: unknown field 'lr'; valid fields:"),
    (["+trainer.epoch=3"], "trainer: unknown field 'epoch'; valid fields:"),
    (["regularizer=l2", "optimizer=adamw"], "l2 together with adamw's weight_decay"),
    (["optimizer=sgd", "schedule.cycle_momentum=true"], "schedule.cycle_momentum needs an optimizer with momentum"),
    (["regularizer=[dropout,alpha_dropout]"], "regularizer: alpha_dropout and dropout conflict"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_values_are_rejected_with_the_field(overrides, message):
    base = ["optimizer=nesterov"] if not any(o.startswith("optimizer=") for o in overrides) else []
    with pytest.raises(ConfigError) as error:
        settings_from_config(compose_dict([*base, *overrides]))
    assert message in str(error.value)
    assert "\n" not in str(error.value)
