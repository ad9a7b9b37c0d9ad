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
