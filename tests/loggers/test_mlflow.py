"""logger=mlflow, with the real MLflow: what deeprun logged, read back through MLflow's own API
(``mlflow.search_runs``, the client's metric history and artifact listing) and compared with the run
folders' files; over a real ``mlflow server`` on a loopback port too."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from deeprun.commands.run import main as deeprun_main
from deeprun.commands.tune import main as tune_main
from deeprun.loggers import flat_hparams
from deeprun.registry import ConfigError
from deeprun.settings import settings_from_config
from helpers.commands import invoke
from helpers.configs import compose_dict

mlflow = pytest.importorskip("mlflow")

FAST = ("data=synthetic", "data.n_train=300", "model.hidden=[16]", "trainer.epochs=3", "schedule=constant")


@pytest.fixture(autouse=True)
def _no_store_from_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def local_store(cwd: Path) -> str:
    """The default store: the SQLite database in ``outputs/`` where deeprun was started."""
    return f"sqlite:///{cwd.resolve() / 'outputs' / 'mlflow.db'}"


def search_runs(uri: str, experiment: str) -> list:
    """``mlflow.search_runs`` on ``uri``'s experiment; MLflow's global tracking URI (and the variable it
    sets with it) unset again afterwards."""
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(experiment_names=[experiment], output_format="list")
    finally:
        mlflow.set_tracking_uri(None)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def history(uri: str, run_id: str, key: str) -> dict[int, float]:
    """step → value of a metric (the latest value logged at each step)."""
    found: dict[int, float] = {}
    for metric in sorted(client(uri).get_metric_history(run_id, key), key=lambda m: m.timestamp):
        found[metric.step] = metric.value
    return found


def assert_run_matches_its_folder(uri: str, run_id: str, run_dir: Path) -> None:
    """Params = the saved config flattened, every epoch's metrics at its step, test metrics, tags,
    status and the folder's files as artifacts."""
    run = client(uri).get_run(run_id)
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert run.data.params == {key: str(value) for key, value in flat_hparams(config).items()}
    epochs = records(run_dir)
    for key in ("train/loss", "val/loss", "val/accuracy", "lr"):
        assert history(uri, run_id, key) == {r["epoch"]: pytest.approx(r[key], rel=1e-6) for r in epochs}, key
    summary = json.loads((run_dir / "summary.json").read_text())
    tested = history(uri, run_id, "test/accuracy")  # a resumed run's earlier test too, at its step
    assert max(tested) == summary["epochs_completed"] and tested[max(tested)] == summary["test"]["accuracy"]
    assert run.data.tags["deeprun.status"] == "completed" and run.info.status == "FINISHED"
    assert run.data.tags["deeprun.version"] == summary["versions"]["deeprun"]
    assert run.data.tags["deeprun.run_dir"] == str(run_dir.resolve())
    commit = (summary.get("source") or {}).get("git_commit")
    assert run.data.tags.get("mlflow.source.git.commit") == commit
    artifacts = {item.path for item in client(uri).list_artifacts(run_id)}
    assert {"summary.json", "metrics.jsonl", "metrics.csv", ".hydra"} <= artifacts, artifacts
    assert any(path.startswith("checkpoint") for path in artifacts), artifacts


def test_a_sweep_is_a_parent_run_with_its_jobs_nested_beside_tensorboard(tmp_path):
    """Two fused jobs with logger=[tensorboard,mlflow]: both loggers write; MLflow has the sweep's run
    and its two jobs nested, each equal to its folder."""
    sweep = tmp_path / "sweep"
    args = ("-m", *FAST, "logger=[tensorboard,mlflow]", "trainer.seed=1,2", "hydra.launcher.workers=1")
    result = invoke(deeprun_main, *args, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 fused runs" in result.stdout
    uri = local_store(tmp_path)
    runs = search_runs(uri, "default")
    parent_id = json.loads((sweep / "mlflow.json").read_text())["run_id"]
    jobs = {run.data.tags["deeprun.run_dir"]: run for run in runs if run.info.run_id != parent_id}
    assert sorted(jobs) == [str((sweep / job).resolve()) for job in ("0", "1")]
    for job in ("0", "1"):
        run = jobs[str((sweep / job).resolve())]
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert run.info.run_name == f"default #{job}"
        assert_run_matches_its_folder(uri, run.info.run_id, sweep / job)
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents.*"))
    parent = client(uri).get_run(parent_id)
    assert parent.info.status == "FINISHED" and "mlflow.parentRunId" not in parent.data.tags
    assert "sweep_summary.csv" in {item.path for item in client(uri).list_artifacts(parent_id)}


@pytest.mark.slow  # a stopped process and its resume; the sweep test covers the logging by default
def test_a_resumed_run_continues_the_same_mlflow_run(tmp_path):
    """SIGTERM after the first epoch (status interrupted → KILLED), then trainer.resume: one MLflow run,
    FINISHED, its epochs equal to the folder's."""
    run_dir = tmp_path / "run"
    entry = "import sys; from deeprun.commands.entry import deeprun; sys.exit(deeprun())"
    args = (*FAST, "trainer.epochs=4", "logger=mlflow", f"hydra.run.dir={run_dir}")
    process = subprocess.Popen([sys.executable, "-c", entry, *args], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while process.poll() is None and time.time() < deadline and not (run_dir / "metrics.jsonl").is_file():
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    uri = local_store(tmp_path)
    run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    assert client(uri).get_run(run_id).info.status == "KILLED"
    resumed = invoke(deeprun_main, f"trainer.resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    runs = search_runs(uri, "default")
    assert [run.info.run_id for run in runs] == [run_id]
    assert_run_matches_its_folder(uri, run_id, run_dir)


@pytest.mark.slow  # the sweep test covers nesting by default; this: a study's own parent
def test_a_studys_trials_are_nested_under_its_run(tmp_path):
    study = tmp_path / "study"
    args = (*FAST, "logger=mlflow", "logger.mlflow.experiment=tuning", "tune.n_trials=2", f"tune.dir={study}")
    result = invoke(tune_main, *args, "tune/space=learning_rate", cwd=tmp_path, program="deeprun-tune")
    assert result.returncode == 0, result.stderr
    uri = local_store(tmp_path)
    parent_id = json.loads((study / "mlflow.json").read_text())["run_id"]
    runs = search_runs(uri, "tuning")
    trials = sorted((run for run in runs if run.info.run_id != parent_id), key=lambda run: run.info.run_name)
    assert [run.info.run_name for run in trials] == ["trial 0", "trial 1"]
    for number, run in enumerate(trials):
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        epochs = records(study / "trials" / str(number))
        assert history(uri, run.info.run_id, "val/loss") == {r["epoch"]: pytest.approx(r["val/loss"]) for r in epochs}
        assert run.data.params["optimizer.learning_rate"] == str(
            yaml.safe_load((study / "trials" / str(number) / ".hydra/config.yaml").read_text())["optimizer"][
                "learning_rate"
            ]
        )
    assert client(uri).get_run(parent_id).info.status == "FINISHED"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` on a loopback port with a SQLite store (artifacts proxied into tmp_path)."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--workers", "1"]
    server = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"mlflow server did not start: {server.stderr.read() if server.stderr else ''}")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_a_run_logs_to_an_mlflow_server_over_http(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # the environment's store, as MLflow's own tools read it
    run_dir = tmp_path / "run"
    result = invoke(deeprun_main, *FAST, "logger=mlflow", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    recorded = json.loads((run_dir / "mlflow.json").read_text())
    assert recorded["tracking_uri"] == mlflow_server
    assert_run_matches_its_folder(mlflow_server, recorded["run_id"], run_dir)
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_mlflow_options_are_validated_and_the_extra_is_named_when_missing(monkeypatch):
    with pytest.raises(ConfigError, match="logger.mlflow.tracking_uri is empty"):
        settings_from_config(compose_dict(["logger=mlflow", "logger.mlflow.tracking_uri=''"]))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what the import system reads as "not installed"
    with pytest.raises(ConfigError, match=r"logger=mlflow needs MLflow: pip install 'deeprun\[mlflow\]'"):
        settings_from_config(compose_dict(["logger=mlflow"]))


def test_a_store_that_cannot_be_reached_costs_one_warning_not_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run_dir = tmp_path / "run"
    args = (
        *FAST,
        "trainer.epochs=2",
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={closed}",
        f"hydra.run.dir={run_dir}",
    )
    result = invoke(deeprun_main, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("deeprun: warning: mlflow:")]
    assert len(warnings) == 1 and str(run_dir) in warnings[0], result.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert len(records(run_dir)) == 2 and not (run_dir / "mlflow.json").exists()
