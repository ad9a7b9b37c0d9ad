"""``summary.json``'s provenance: schema version, every dependency's version, the source revision, the command
line and the fingerprint of the data the run saw."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

from deeprun.commands.run import main as deeprun_main
from deeprun.data import DATASETS
from deeprun.runs.folder import SUMMARY_SCHEMA_VERSION
from deeprun.runs.records import collect_runs
from helpers.commands import invoke

ROOT = Path(__file__).resolve().parents[2]
ARGS = ("data=synthetic", "model.hidden=[8]", "trainer.epochs=1", "trainer.plots=false", "trainer.checkpoint=false")


def test_a_summary_records_where_it_came_from(tmp_path):
    run = tmp_path / "run"
    result = invoke(deeprun_main, *ARGS, "data.seed=3", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text(), parse_constant=lambda name: 1 / 0)
    assert summary["schema_version"] == SUMMARY_SCHEMA_VERSION == 1
    assert summary["command"] == ["deeprun", *ARGS, "data.seed=3", f"hydra.run.dir={run}"]

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {dependency.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip() for dependency in dependencies}
    assert names <= set(summary["versions"]), names - set(summary["versions"])
    assert {"deeprun", "python"} <= set(summary["versions"])

    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # tests run from a checkout
        assert summary["source"]["git_commit"] == head.stdout.strip()
        assert isinstance(summary["source"]["dirty"], bool)

    seen = DATASETS.build({"name": "synthetic", "seed": 3}).load().fingerprint
    other = DATASETS.build({"name": "synthetic", "seed": 4}).load().fingerprint
    assert summary["data"]["fingerprint"] == seen != other


def test_every_kind_of_summary_follows_the_json_schema(tmp_path):
    """A completed run, a diverged one (non-finite numbers become null), a failed one, a resumed one, a
    pruned tuning trial: each written summary.json validates against the packaged JSON Schema."""
    import jsonschema

    from deeprun.commands.tune import main as tune_main

    schema = json.loads((ROOT / "src" / "deeprun" / "runs" / "summary.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    cases = {
        "completed": (*ARGS,),
        "diverged": (*ARGS, "optimizer=sgd", "optimizer.learning_rate=1e30", "schedule=constant"),
    }
    for name, args in cases.items():
        invoke(deeprun_main, *args, f"hydra.run.dir={tmp_path / name}", cwd=tmp_path)
    # A sweep whose second job is bad input: that job's folder records it as failed.
    sweep = ("-m", *ARGS, "trainer.batch_size=32,0", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    invoke(deeprun_main, *sweep, cwd=tmp_path)
    tune = (*ARGS, "tune/space=learning_rate", "tune.n_trials=3", f"tune.dir={tmp_path / 'study'}")
    tuned = invoke(tune_main, *tune, cwd=tmp_path, program="deeprun-tune")
    assert tuned.returncode == 0, tuned.stderr
    summaries = sorted(tmp_path.rglob("summary.json"))
    statuses = set()
    for path in summaries:
        summary = json.loads(path.read_text(), parse_constant=lambda name: 1 / 0)  # strict JSON
        jsonschema.validate(summary, schema)
        statuses.add(summary["status"])
    assert {"completed", "diverged", "failed"} <= statuses, statuses
    assert len(summaries) == 2 + 2 + 3
    assert [run.job for run in collect_runs(tmp_path / "study")] == ["trials/0", "trials/1", "trials/2"]
