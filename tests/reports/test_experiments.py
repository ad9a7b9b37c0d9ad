"""Chapter-11 experiment configs (fast variants on synthetic data) and the comparison with the book."""

import json
import statistics
from pathlib import Path

import pytest

from deeprun.reports.book import EXPERIMENTS, compare, write_book_report
from deeprun.settings import CONFIG_DIR, settings_from_config
from deeprun.training.loop import fit
from helpers.configs import compose_dict

# The per-run overrides the Makefile's ch11 targets add to each experiment config.
RUNS = {
    "ch11_batchnorm": [["normalization=batchnorm"], ["normalization=batchnorm_before"]],
    "ch11_optimizers": [["optimizer=nadam"], ["optimizer=adamw", "optimizer.weight_decay=0.01"]],
    "ch11_1cycle": [[]],
    "ch11_regularization": [
        ["regularizer=l2", "model.output_initializer=he_normal", "optimizer=sgd", "optimizer.learning_rate=0.02"],
        ["regularizer=dropout", "optimizer=momentum"],
        ["regularizer=max_norm", "optimizer=momentum"],
    ],
    "ch11_selu_vs_relu": [
        ["initializer=lecun_normal", "activation=selu", "model.depth=3"],
        ["initializer=he_normal", "activation=relu", "model.depth=3"],
    ],
    "ch11_transfer": [["data.n_classes=2", "model.head=sigmoid"]],
    "ch11_schedules": [
        ["optimizer=sgd", "schedule=exponential", "schedule.unit=epoch", "schedule.decay_steps=20"],
        ["optimizer=nadam", "schedule=piecewise", "schedule.values=[0.01,0.005,0.001]"],
        ["optimizer=sgd", "schedule=performance"],
    ],
}


def test_selu_and_relu_nets_both_read_standardized_inputs_as_the_notebooks():
    for overrides in RUNS["ch11_selu_vs_relu"]:
        assert compose_dict(["experiment=ch11_selu_vs_relu", *overrides])["data"]["scaling"] == "standardize"


def test_every_experiment_config_is_covered():
    assert sorted(p.stem for p in Path(CONFIG_DIR, "experiment").glob("*.yaml")) == sorted(RUNS)


@pytest.mark.parametrize(
    "experiment,overrides",
    [(e, o) for e, runs in RUNS.items() for o in runs],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_experiment_trains_one_epoch_on_synthetic_data(experiment, overrides):
    config = compose_dict(
        [
            f"experiment={experiment}",
            "data=synthetic",
            *overrides,
            "trainer.epochs=1",
            "trainer.checkpoint=false",
            "trainer.plots=false",
        ]
    )
    settings = settings_from_config(config)
    assert settings.name == experiment
    result = fit(settings, settings.data.load())
    assert result.status == "completed"


def fake_run(folder: Path, job: str, overrides: list[str], final: dict, test: dict | None = None) -> None:
    run = folder / job
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    record = {"epoch": 2, "step": 2, "lr": 0.01, "epoch_time_s": 1.0, **final}
    (run / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    (run / "summary.json").write_text(
        json.dumps(
            {"status": "completed", "epochs_completed": 2, "final": final, "best": final, "best_epoch": 2, "test": test}
        )
    )


def test_report_compares_with_the_book_and_flags_what_is_out_of_tolerance(tmp_path):
    close = {"train/loss": 0.41, "train/accuracy": 0.856, "val/loss": 0.37, "val/accuracy": 0.866}
    off = {"train/loss": 0.90, "train/accuracy": 0.70, "val/loss": 0.38, "val/accuracy": 0.864}
    fake_run(tmp_path, "0", ["experiment=ch11_batchnorm", "normalization=batchnorm"], close)
    fake_run(tmp_path, "1", ["experiment=ch11_batchnorm", "normalization=batchnorm_before"], off)
    rows = compare(EXPERIMENTS["batchnorm"], tmp_path)
    verdict = {(r["run"].split()[1], r["metric"]): r["within"] for r in rows}
    assert verdict[("after", "val/accuracy")] and verdict[("after", "train/loss")]
    assert not verdict[("before", "train/loss")] and not verdict[("before", "train/accuracy")]
    assert verdict[("before", "val/accuracy")]
    text = write_book_report("batchnorm", tmp_path).read_text()
    row = (
        "| BN before activation | 1 | train/loss | 0.4275 | 0.9000 ± 0.0000 | 0.9000 – 0.9000 | 1 | +0.4725 | **no** |"
    )
    assert row in text
    assert "6 of 8 numbers within tolerance (0 missing)." in text


def test_runs_not_trained_as_the_book_are_marked_not_within(tmp_path):
    """``--book batchnorm`` on runs of another setup (1 epoch instead of 2): close numbers, yet every
    row says which field differs and none counts as within."""
    import yaml

    close = {"train/loss": 0.41, "train/accuracy": 0.856, "val/loss": 0.37, "val/accuracy": 0.866}
    for job, epochs in (("0", 2), ("1", 1)):
        fake_run(tmp_path, job, ["normalization=batchnorm", f"trainer.seed={job}"], close)
        config = {
            "data": {"name": "fashion_mnist"},
            "model": {"name": "mlp", "hidden": [300, 100]},
            "optimizer": {"name": "sgd"},
            "trainer": {"epochs": epochs},
        }
        (tmp_path / job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [r for r in compare(EXPERIMENTS["batchnorm"], tmp_path) if r["run"].startswith("BN after")]
    assert rows and all(r["within"] is False and r["setup"] == "1: trainer.epochs is 1, not 2" for r in rows)
    text = write_book_report("batchnorm", tmp_path).read_text()
    assert "**no**: not the book's setup (1: trainer.epochs is 1, not 2)" in text


def test_rows_are_judged_on_the_seeds_spread(tmp_path):
    """Three seeds: mean ± std and the range; the book's number inside the range widened by the
    tolerance is within, even when the mean alone is not; outside it is not."""
    book = EXPERIMENTS["batchnorm"].runs[0].numbers["val/accuracy"]  # 0.8650
    for job, accuracy in enumerate((0.835, 0.842, 0.848)):  # mean 0.8417: 0.0233 below the book
        final = {"train/loss": 0.41, "train/accuracy": 0.856, "val/loss": 0.37, "val/accuracy": accuracy}
        fake_run(tmp_path, str(job), ["normalization=batchnorm", f"trainer.seed={job}"], final)
    row = next(r for r in compare(EXPERIMENTS["batchnorm"], tmp_path) if r["metric"] == "val/accuracy")
    assert row["n"] == 3 and row["ours"] == pytest.approx(statistics.fmean((0.835, 0.842, 0.848)))
    assert row["std"] == pytest.approx(statistics.stdev((0.835, 0.842, 0.848)))
    assert (row["min"], row["max"]) == (0.835, 0.848)
    assert abs(row["ours"] - book) > 0.02 and row["within"]  # 0.848 + 0.02 reaches 0.865
    assert not EXPERIMENTS["batchnorm"].within("val/accuracy", book, [0.80, 0.83, 0.84])


def test_report_uses_test_metrics_and_counts_missing_runs(tmp_path):
    fake_run(
        tmp_path,
        "0",
        ["regularizer=dropout"],
        {"train/loss": 0.39, "train/accuracy": 0.855, "val/loss": 0.345, "val/accuracy": 0.873},
        test={"loss": 0.3629, "accuracy": 0.87},
    )
    rows = compare(EXPERIMENTS["regularization"], tmp_path)
    test_row = next(r for r in rows if r["metric"] == "test/accuracy")
    assert test_row["ours"] == 0.87 and test_row["within"]
    assert sum(r["ours"] is None for r in rows) == 8  # l2 and max_norm have no run here


def test_task_results_are_read_from_their_json_file(tmp_path):
    run = tmp_path / "finder"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- model.hidden=[100,100,100]\n")
    (run / "lr_finder.json").write_text(
        json.dumps({"epoch_loss": 1.80, "epoch_accuracy": 0.30, "suggested_max_rate": 0.12})
    )
    rows = {r["metric"]: r for r in compare(EXPERIMENTS["lr-finder"], run)}
    assert rows["epoch_loss"]["within"] and rows["suggested_max_rate"]["within"]
    assert not rows["epoch_accuracy"]["within"]


def test_restored_best_weights_are_compared_through_the_best_epoch(tmp_path):
    best = {"train/loss": 1.2, "train/accuracy": 0.55, "val/loss": 1.43, "val/accuracy": 0.505}
    run = tmp_path / "8c" / "0"
    fake_run(
        tmp_path / "8c",
        "0",
        ["data=cifar10", "normalization=batchnorm_before"],
        {"train/loss": 0.9, "train/accuracy": 0.7, "val/loss": 1.7, "val/accuracy": 0.45},
    )
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "best": best}))
    rows = {r["metric"]: r for r in compare(EXPERIMENTS["cifar10"], tmp_path) if r["run"].startswith("8c")}
    assert rows["best/val/accuracy"]["ours"] == 0.505 and rows["best/val/accuracy"]["within"]
    assert rows["best/val/loss"]["ours"] == 1.43


def test_transfer_report_pairs_b_with_b_on_a_seed_by_seed(tmp_path):
    final = {"train/loss": 0.3, "train/accuracy": 0.9, "val/loss": 0.3, "val/accuracy": 0.9}
    for seed, (b, b_on_a) in {42: (0.91, 0.94), 43: (0.92, 0.93)}.items():
        fake_run(
            tmp_path / "model_B",
            str(seed),
            ["name=model_B", f"trainer.seed={seed}"],
            final,
            {"accuracy": b, "loss": 0.4},
        )
        on_a = ["name=model_B_on_A", f"trainer.seed={seed}"]
        fake_run(tmp_path / "model_B_on_A", str(seed), on_a, final, {"accuracy": b_on_a, "loss": 0.3})
    text = write_book_report("transfer", tmp_path).read_text()
    assert "| 42 | 0.9100 | 0.9400 | 0.0300 | 0.4000 | 0.3000 |" in text
    assert "| 43 | 0.9200 | 0.9300 | 0.0100 | 0.4000 | 0.3000 |" in text
    assert "| mean | 0.9150 | 0.9350 | 0.0200 | 0.4000 | 0.3000 |" in text


def test_the_lr_finder_report_reads_every_seeds_finder_folder(tmp_path):
    """``make ch11-lr-finder``: one deeprun-lr-finder folder per seed (not training runs: the sweep summary
    skips them), compared with the book on the seeds' mean and range."""
    from deeprun.commands.report import main as report_main

    for seed, accuracy in ((42, 0.39), (43, 0.41), (44, 0.40)):
        folder = tmp_path / str(seed)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text(f"lr_finder: {{min_rate: 0.0001}}\ntrainer: {{seed: {seed}}}\n")
        result = {"epoch_loss": 1.8, "epoch_accuracy": accuracy, "suggested_max_rate": 0.1}
        (folder / "lr_finder.json").write_text(json.dumps(result))
    assert report_main([str(tmp_path), "--book", "lr-finder", "--no-figures"]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "| LR finder | 42, 43, 44 | epoch_accuracy | 0.4122 | 0.4000 ± 0.0100 | 0.3900 – 0.4100 | 3 |" in text
    assert not (tmp_path / "sweep_summary.md").exists()
