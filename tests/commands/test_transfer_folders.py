"""A transfer run stands on its own: ``model.init_from`` is recorded as an absolute path, and reading the
run back (deeprun-eval, -prune, -export) never needs the donor run, which may be moved or deleted."""

from __future__ import annotations

import json
import shutil

import pytest
from omegaconf import OmegaConf

from deeprun.commands import evaluate, export, prune
from helpers.commands import deeprun, invoke

SMALL = ("data=synthetic", "model.hidden=[16,8]", "trainer.epochs=1", "trainer.plots=false")


@pytest.mark.slow  # the donor-reading rules have fast tests
def test_b_on_a_works_after_a_is_deleted_from_another_folder(tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    a = deeprun(*SMALL, "hydra.run.dir=A", cwd=work)
    assert a.returncode == 0, a.stderr
    b = deeprun(*SMALL, "model.init_from=A", "regularizer=dropout", "hydra.run.dir=B", cwd=work)  # relative
    assert b.returncode == 0, b.stderr
    saved = OmegaConf.load(work / "B" / ".hydra" / "config.yaml")
    assert saved.model.init_from == str((work / "A").resolve())

    shutil.rmtree(work / "A")
    run_b = str(work / "B")
    evaluated = invoke(evaluate.main, run_b, "mc_samples=2", cwd=elsewhere)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((work / "B" / "mc_dropout.json").read_text())["mc_samples"] == 2
    pruned = invoke(prune.main, run_b, "threshold=0.01", cwd=elsewhere)
    assert pruned.returncode == 0, pruned.stderr
    assert (work / "B" / "prune.json").is_file() and (work / "B" / "pruned" / "checkpoint").is_dir()
    exported = invoke(export.main, run_b, "batch_sizes=[1]", "repeats=1", cwd=elsewhere)
    assert exported.returncode == 0, exported.stderr
    assert (work / "B" / "export" / "model.npz").is_file()
    assert not list(elsewhere.iterdir())  # nothing written where the commands ran
