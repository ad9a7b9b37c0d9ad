"""``trainer.devices``: each batch sharded over several devices (two forced CPU devices here) trains
the same run as one device, to float tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from deeprun.registry import ConfigError

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from helpers.configs import compose_dict
    from deeprun.settings import settings_from_config
    from deeprun.training.trainer import Trainer
    from deeprun.training.loop import fit

    overrides = ["data=synthetic", "data.n_train=500", "model.hidden=[64,32]", "trainer.epochs=3",
                 "trainer.checkpoint=false", "trainer.plots=false", "trainer.batch_size=33",
                 "normalization=batchnorm", "regularizer=dropout", "optimizer=nadam"]
    results = {}
    for devices in (1, "all"):
        settings = settings_from_config(compose_dict([*overrides, f"trainer.devices={devices}"]))
        dataset = settings.data.load()
        result = fit(settings, dataset)
        params = [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(result.state.params)]
        results[str(devices)] = {"history": result.history, "test": result.test, "params": params,
                                 "sharding": str(jax.tree.leaves(result.state.params)[0].sharding)}
    trainer = Trainer(settings, len(dataset.y_train), dataset.n_features, dataset.n_classes)
    state, member = trainer.init(settings)
    from deeprun.training.state import DeviceData
    import jax.numpy as jnp
    hlo = trainer.epoch_fn.lower(trainer.place(state), trainer.place(member), trainer.place(DeviceData.of(dataset)),
                                 jnp.int32(0), None).compile().as_text()
    results["all-reduce"] = "all-reduce" in hlo
    results["device_count"] = jax.device_count()
    json.dump(results, sys.stdout)
""")


@pytest.mark.slow  # spawns a 2-device process; the sharding settings have fast tests
def test_two_devices_match_one():
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = os.path.dirname(tests)
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
    env = {**os.environ, "XLA_FLAGS": flags, "PYTHONPATH": tests}
    process = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert process.returncode == 0, process.stderr
    results = json.loads(process.stdout)
    assert results["device_count"] == 2 and results["all-reduce"], "the batch is not split over the devices"
    one, two = results["1"], results["all"]
    assert "cpu:1" not in one["sharding"] and "data" in two["sharding"]  # replicated over the 2-device mesh
    assert len(one["history"]) == len(two["history"]) == 3
    for a, b in zip(one["history"], two["history"], strict=True):
        for key in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    for a, b in zip(one["params"], two["params"], strict=True):
        import numpy as np

        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-5)


def test_more_devices_than_visible_is_rejected(make_settings):
    from deeprun.training.trainer import training_devices

    with pytest.raises(ConfigError, match=r"trainer.devices: 64 requested, but 1 cpu device\(s\) are visible"):
        training_devices(64)
    assert len(training_devices("all")) == 1


def test_devices_must_be_positive_or_all(make_settings):
    with pytest.raises(ConfigError, match="trainer.devices"):
        make_settings("trainer.devices=0")
    with pytest.raises(ConfigError, match="trainer.devices"):
        make_settings("trainer.devices=some")
