"""A user's plugin package (``tests/plugins/deeprun_example``: an activation, a dataset and a CNN model)
installed through the ``deeprun.plugins`` entry point group, or named in ``plugins=``, used by every
command: train, resume, a joblib sweep, ``deeprun-eval``, ``-prune``, ``-export``, ``-report``.

Each command runs in its own process, as a user's would: the plugin's registrations never leak into
the other tests' registries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers.commands import run_command

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
#: The CNN with batch norm, dropout, l2 and 1cycle on the plugin's dataset and activation.
CNN = (
    "data=stripes",
    "model=small_cnn",
    "activation=scaled_tanh",
    "normalization=batchnorm",
    "regularizer=[dropout,l2]",
    "schedule=1cycle",
    "trainer.plots=false",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The environment of a machine where the plugin is installed: its package on the path and a
    distribution whose entry point names it (what ``pip install`` of a plugin leaves)."""
    site = tmp_path_factory.mktemp("site")
    info = site / "deeprun_example-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: deeprun-example\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[deeprun.plugins]\nexample = deeprun_example\n")
    path = os.pathsep.join(p for p in (str(site), str(PLUGINS), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def command(name: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_command(*args, cwd=cwd, module=f"deeprun.commands.{name}", env=env)


@pytest.mark.slow  # a plugin named in the config trains and loads by default
def test_an_installed_plugin_works_with_every_command(installed, tmp_path):
    run = tmp_path / "cnn"
    result = command("run", *CNN, "trainer.epochs=3", f"hydra.run.dir={run}", cwd=tmp_path, env=installed)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test"]["accuracy"] > 0.6
    assert {"module": "deeprun_example", "source": "entry point", "version": "0.1"} in summary["plugins"]
    saved = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    # The model's partial YAML, completed from its schema.
    assert saved["model"] == {
        "name": "small_cnn",
        "output_initializer": "glorot_uniform",
        "head": "softmax",
        "init_from": None,
        "reuse_layers": None,
        "image_size": 8,
        "channels": [8, 16],
    }
    assert saved["activation"] == {"name": "scaled_tanh", "scale": 1.7159}

    evaluated = command("evaluate", str(run), "mc_samples=5", cwd=tmp_path, env=installed)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "MC dropout" in evaluated.stdout
    pruned = command("prune", str(run), "threshold=0.05", cwd=tmp_path, env=installed)
    assert pruned.returncode == 0, pruned.stderr
    layers = [layer["name"] for layer in json.loads((run / "prune.json").read_text())["layers"]]
    assert layers == ["convs/0", "convs/1", "output"]
    exported = command("export", str(run), "batch_sizes=[1]", "repeats=2", cwd=tmp_path, env=installed)
    assert exported.returncode == 0, exported.stderr
    checks = json.loads((run / "export" / "latency.json").read_text())["checks"]
    assert checks["exported program float32"]["argmax_agreement"] == 1.0
    assert checks["exported program float32"]["test_accuracy"] == summary["test"]["accuracy"]
    reported = command("report", str(tmp_path), cwd=tmp_path, env=installed)
    assert reported.returncode == 0, reported.stderr
    assert "model=small_cnn" in (tmp_path / "sweep_summary.md").read_text()


@pytest.mark.slow  # resume and joblib workers are tested by default without a plugin
def test_a_run_of_a_plugin_resumes_and_a_joblib_sweep_loads_it(installed, tmp_path):
    run = tmp_path / "run"
    args = (*CNN, "data.n_train=600", "trainer.epochs=20", f"hydra.run.dir={run}")
    process = subprocess.Popen(
        [sys.executable, "-m", "deeprun.commands.run", *args],
        cwd=tmp_path,
        env={**os.environ, **installed},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None and not (run / "metrics.jsonl").is_file():
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    resumed = command("run", f"trainer.resume={run}", cwd=tmp_path, env=installed)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 20

    sweep = tmp_path / "sweep"
    result = command(
        "run",
        "-m",
        *CNN,
        "trainer.epochs=1",
        "trainer.checkpoint=false",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "trainer.seed=1,2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env=installed,
    )
    assert result.returncode == 0, result.stderr
    for job in ("0", "1"):
        assert json.loads((sweep / job / "summary.json").read_text())["status"] == "completed"


def test_a_plain_module_named_in_the_config(tmp_path):
    """No installation: a package in the current folder, its YAMLs through ``--config-dir``; the saved
    config's ``plugins`` lets ``deeprun-eval`` load it again."""
    shutil.copytree(PLUGINS / "deeprun_example", tmp_path / "deeprun_example")
    run = tmp_path / "run"
    args = ("--config-dir", "deeprun_example/conf", "plugins=[deeprun_example]", *CNN, "trainer.epochs=1")
    result = command("run", *args, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["plugins"] == [{"module": "deeprun_example", "source": "config", "version": None}]
    assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["plugins"] == ["deeprun_example"]
    evaluated = command("evaluate", str(run), "mc_samples=2", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("plugins=[no_such_plugin]",), "deeprun: error: plugins: 'no_such_plugin' cannot be imported"),
        (("model=small_cnn",), "deeprun: error: model=small_cnn: no such option"),
    ],
)
def test_a_missing_plugin_is_one_line(tmp_path, args, message):
    result = command("run", *args, "data=synthetic", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().startswith(message), result.stderr
    assert not any(tmp_path.iterdir())
