"""The config that ran, in full: a partial YAML composes with its option's schema, a field its YAML
leaves out can be overridden without ``+``, deleting a field is an error, ``--cfg job`` validates and
prints what a run records."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from deeprun.commands.run import main as deeprun_main
from deeprun.registry import field_defaults
from deeprun.runs.records import read_run
from deeprun.settings import CONFIG_DIR, GROUPS, TrainerSettings, complete_config
from helpers.commands import invoke
from helpers.configs import compose_dict

FAST = ("data=synthetic", "model.hidden=[8]", "trainer.epochs=1", "trainer.plots=false", "trainer.checkpoint=false")
ADAM_DEFAULTS = {"beta_2": 0.999, "epsilon": 1e-7, "clip_value": None, "clip_norm": None, "clip_global_norm": None}


@pytest.fixture
def user_configs(tmp_path):
    folder = tmp_path / "conf" / "optimizer"
    folder.mkdir(parents=True)
    (folder / "my_adam.yaml").write_text("name: adam\nlearning_rate: 0.003\n")
    return tmp_path / "conf"


def test_a_partial_yaml_runs_in_full_and_takes_overrides_of_the_fields_it_leaves_out(tmp_path, user_configs):
    run = tmp_path / "run"
    args = ("--config-dir", str(user_configs), *FAST, "optimizer=my_adam", "optimizer.beta_1=0.8")
    result = invoke(deeprun_main, *args, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert saved["optimizer"] == {"name": "adam", "learning_rate": 0.003, "beta_1": 0.8, **ADAM_DEFAULTS}
    assert saved["trainer"]["loss_scale"] == {"initial": 32768.0, "growth_steps": 2000}
    # Hydra got "++optimizer.beta_1=0.8" (set or add); reports show what the user typed.
    assert "++optimizer.beta_1=0.8" in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert read_run(run).override_list[-1] == "optimizer.beta_1=0.8"

    shown = invoke(deeprun_main, *args, "--cfg", "job", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    printed = yaml.safe_load(shown.stdout)
    assert printed["optimizer"] == saved["optimizer"] and printed["model"] == saved["model"]
    assert {key: printed[key] for key in saved if key != "trainer"} == {
        k: v for k, v in saved.items() if k != "trainer"
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("~trainer.early_stopping",), "~trainer.early_stopping: a field cannot be deleted"),
        (("~optimizer.learning_rate",), "~optimizer.learning_rate: a field cannot be deleted"),
        (("optimizer.beta_1=0.8",), "optimizer.momentum: unknown field 'beta_1'"),  # a field of adam, not momentum
        (("--cfg", "job", "trainer.batch_size=-1"), "trainer.batch_size must be > 0 (got -1)"),
        (("-c", "all", "trainer.batch_size=-1"), "trainer.batch_size must be > 0 (got -1)"),
        (("--cfg", "job", "optimizer.betta=1"), "optimizer.betta: no such field"),
        (("--cfg", "job", "optimizer=nope"), "optimizer=nope: no such option"),
    ],
)
def test_deleting_a_field_or_an_invalid_printed_config_is_one_line(tmp_path, args, message):
    result = invoke(deeprun_main, *args, *FAST, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith(f"deeprun: error: {message}"), result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not any(tmp_path.iterdir())


def test_deleting_a_group_is_meaningful_and_recorded(tmp_path):
    run = tmp_path / "run"
    result = invoke(deeprun_main, *FAST, "~logger", "~regularizer", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert saved["logger"] == {} and saved["regularizer"] == {}


def _options():
    for group in GROUPS:
        folder = CONFIG_DIR / group.key
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
            yield group, path.stem


@pytest.mark.parametrize(("group", "option"), list(_options()), ids=lambda value: getattr(value, "key", value))
def test_every_packaged_option_completes_to_every_field_of_its_schema(group, option):
    overrides = [f"{group.key}={option}"]
    if group.key == "data" and option == "arrays":
        overrides.append("data.path=x.npz")
    config = complete_config(compose_dict(overrides))
    entry = config[group.key]
    if group.registry is None:
        expected = set(field_defaults(TrainerSettings))
        assert set(entry) == expected
    elif group.key in ("regularizer", "logger"):  # {option: fields}
        for name, fields in entry.items():
            assert set(fields) == {f.name for f in dataclasses.fields(group.registry.get(name))}
    else:
        schema = group.registry.get(entry["name"])
        assert set(entry) == {"name", *(f.name for f in dataclasses.fields(schema) if f.init)}
