"""deeprun-list: every config group, its options and their fields with defaults."""

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from deeprun.commands.catalog import catalog
from deeprun.commands.catalog import main as catalog_main
from deeprun.registry import ConfigError
from deeprun.settings import CONFIG_DIR, GROUPS
from helpers.commands import invoke, run_command

CONF = Path(CONFIG_DIR)


def registries():
    return {group.key: group.registry for group in GROUPS if group.registry is not None}


def test_every_registered_option_is_listed_with_all_its_fields():
    listing = catalog()
    for group, registry in registries().items():
        options = {option.name: option for option in listing[group]}
        assert set(registry.names()) <= set(options), group
        for name in registry.names():
            fields = {f.name for f in dataclasses.fields(registry.get(name)) if f.init}
            listed = {key.split(".")[0] for key in options[name].fields}
            assert fields == listed, (group, name)


@pytest.mark.parametrize("group", sorted(registries()))
def test_values_are_the_yaml_defaults(group):
    for option in catalog([group])[group]:
        values = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option.name}.yaml"))
        if group in ("regularizer", "logger"):  # {option: fields}
            values = values.get(option.name) or {}
        for key, value in values.items():
            if key != "name" and not isinstance(value, dict):
                assert option.fields[key] == value, (group, option.name, key)


def test_groups_and_defaults_come_from_the_primary_config():
    selected = {
        group: option
        for entry in OmegaConf.load(CONF / "config.yaml").defaults
        if not isinstance(entry, str)
        for group, option in entry.items()
        if not group.startswith("override")
    }
    listing = catalog()
    assert list(listing) == list(selected)
    for group, options in listing.items():
        assert [o.name for o in options if o.default] == ([selected[group]] if selected[group] else []), group
    trainer = listing["trainer"][0].fields
    assert trainer["batch_size"] == 32 and trainer["early_stopping.patience"] == 10


def test_presets_list_what_they_set():
    presets = {option.name: option for option in catalog(["preset"])["preset"]}
    assert {path.stem for path in (CONF / "preset").glob("*.yaml")} == set(presets)
    assert presets["ed3_self_normalizing"].fields["activation"] == "selu"
    assert presets["ed3_self_normalizing"].description.startswith("3rd ed. Table 11-4")


def test_unknown_group_is_an_error_naming_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown group 'optimiser'; valid groups: data, model, initializer"):
        catalog(["optimiser"])


def run(*args, cwd):
    return run_command(*args, cwd=cwd, module="deeprun.commands.catalog", env={"COLUMNS": "200"})


def test_deeprun_list_prints_every_group_and_option(tmp_path):
    result = run(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for group, options in catalog().items():
        assert f"{group} ({group}=OPTION" in result.stdout
        for option in options:
            assert option.name in result.stdout
    one = run("optimizer", cwd=tmp_path)
    assert "learning_rate = 0.001" in one.stdout and "momentum *" in one.stdout and "schedule (" not in one.stdout
    # Descriptions are text: brackets are kept, not read as console markup.
    assert "'deeprun[mlflow]'" in run("logger", cwd=tmp_path).stdout


def test_deeprun_list_rejects_an_unknown_group(tmp_path):
    result = invoke(catalog_main, "optimizer", "nope", cwd=tmp_path, program="deeprun-list")
    assert result.returncode == 2
    assert result.stderr.startswith("deeprun-list: error: unknown group 'nope'; valid groups: data, model")
