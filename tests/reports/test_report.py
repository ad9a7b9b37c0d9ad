"""Sweep reports: reading run folders (finished, diverged, cut off, never started), the CSV/Markdown
tables, the comparison figures, ``deeprun-report`` and the Hydra callback at the end of a sweep."""

import csv
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from deeprun.commands.report import main
from deeprun.commands.run import main as deeprun_main
from deeprun.reports.sweep import (
    COLUMNS,
    CURVES_PNG,
    FINAL_PNG,
    SUMMARY_CSV,
    SUMMARY_MD,
    run_labels,
    write_sweep_summary,
)
from deeprun.runs.folder import METRIC_KEYS
from deeprun.runs.records import NoRunsError, collect_runs
from deeprun.sweeps.callbacks import SweepSummary
from helpers.commands import invoke, run_command

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMMON = ["data=synthetic", "model.hidden=[16]"]


def record(epoch: int, loss: float, accuracy: float) -> dict:
    return {
        "epoch": epoch,
        "step": 16 * epoch,
        "lr": 0.01,
        "train/loss": loss,
        "train/accuracy": accuracy,
        "val/loss": loss + 0.1,
        "val/accuracy": accuracy - 0.05,
        "epoch_time_s": 0.5,
    }


def write_run(
    path: Path,
    overrides: list[str],
    history: list[dict] | None,
    status: str | None = None,
    truncate: bool = False,
    diverged_epoch: int | None = None,
) -> Path:
    """A run folder written by hand, as deeprun writes it (summary only when ``status`` is given)."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
    if history is not None:
        lines = [json.dumps({k: r[k] for k in METRIC_KEYS}) for r in history]
        text = "\n".join(lines) + "\n"
        if truncate:
            text += lines[-1][: len(lines[-1]) // 2]  # killed while writing the next line
        (path / "metrics.jsonl").write_text(text)
    if status is not None:

        def metrics(r):
            return None if r is None else {k: r[k] for k in METRIC_KEYS if "/" in k}

        finite = [r for r in history if math.isfinite(r["val/loss"])]
        best = min(finite, key=lambda r: r["val/loss"]) if finite else None
        summary = {
            "name": "default",
            "status": status,
            "epochs_completed": len(history),
            "diverged_epoch": diverged_epoch,
            "best_epoch": best["epoch"] if best else None,
            "final": metrics(history[-1]),
            "best": metrics(best),
            "test": None if status == "diverged" else {"accuracy": 0.8, "loss": 0.55},
            "params": {"total": 10, "trainable": 10, "non_trainable": 0},
            "compile_time_s": 1.0,
            "steady_epoch_time_s": 0.5,
            "wall_time_s": 3.25,
        }
        (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Jobs 0..3 and 10 (to check numeric order): completed, diverged, cut off mid-line, never trained,
    stopped early."""
    root = tmp_path / "sweep"
    history = [record(1, 0.9, 0.6), record(2, 0.7, 0.7), record(3, 0.6, 0.75)]
    write_run(root / "0", [*COMMON, "optimizer=sgd"], history, "completed")
    diverged = [record(1, 2.0, 0.1), {**record(2, float("nan"), 0.1), "val/loss": float("inf")}]
    write_run(
        root / "1", [*COMMON, "optimizer=adam", "optimizer.learning_rate=10"], diverged, "diverged", diverged_epoch=2
    )
    write_run(root / "2", [*COMMON, "optimizer=nadam"], history[:2], truncate=True)
    write_run(root / "3", [*COMMON, "optimizer=adamw"], None)
    write_run(root / "10", [*COMMON, "optimizer=rmsprop"], history, "stopped_early")
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    assert matplotlib.image.imread(path).ndim == 3


def test_collect_runs_reads_every_kind_of_run_folder(sweep):
    runs = collect_runs(sweep)
    assert [r.job for r in runs] == ["0", "1", "2", "3", "10"]
    assert [r.status for r in runs] == ["completed", "diverged", "incomplete", "missing", "stopped_early"]
    assert runs[0].overrides == "data=synthetic model.hidden=[16] optimizer=sgd"
    assert len(runs[0].metrics) == 3
    assert len(runs[2].metrics) == 2  # the truncated last line is ignored
    assert runs[2].epochs_completed == 2 and runs[2].final["val/loss"] == pytest.approx(0.8)
    assert runs[3].metrics == [] and runs[3].epochs_completed is None and runs[3].final == {}
    assert runs[1].value("diverged_epoch") == 2 and runs[1].value("test_accuracy") is None
    assert run_labels(runs)[1] == "1: optimizer=adam optimizer.learning_rate=10"


def test_collect_runs_of_a_single_run_folder_and_of_nested_folders(sweep, tmp_path):
    single = collect_runs(sweep / "0")
    assert [r.job for r in single] == ["0"] and single[0].status == "completed"
    nested = collect_runs(tmp_path)  # tmp_path/sweep/<job>
    assert [r.job for r in nested] == ["sweep/0", "sweep/1", "sweep/2", "sweep/3", "sweep/10"]
    assert collect_runs(tmp_path / "nowhere") == []


def test_sweep_summary_csv_rows_and_columns(sweep):
    csv_path, md_path = write_sweep_summary(sweep)
    assert csv_path == sweep / SUMMARY_CSV and md_path == sweep / SUMMARY_MD
    rows = read_csv(csv_path)
    # One column per swept field (the overrides' keys whose values differ), then the metrics.
    assert list(rows[0]) == ["job", "optimizer", "optimizer.learning_rate", *COLUMNS[1:]]
    assert [row["optimizer"] for row in rows] == ["sgd", "adam", "nadam", "adamw", "rmsprop"]
    assert [row["optimizer.learning_rate"] for row in rows] == ["", "10", "", "", ""]
    assert [row["job"] for row in rows] == ["0", "1", "2", "3", "10"]
    done, diverged, cut, missing, early = rows
    assert done["status"] == "completed" and done["epochs_completed"] == "3"
    assert float(done["final_val_accuracy"]) == pytest.approx(0.70)
    assert float(done["final_train_loss"]) == pytest.approx(0.6)
    assert done["best_epoch"] == "3" and float(done["best_val_loss"]) == pytest.approx(0.7)
    assert float(done["test_accuracy"]) == 0.8 and float(done["test_loss"]) == 0.55
    assert float(done["steady_epoch_time_s"]) == 0.5 and float(done["wall_time_s"]) == 3.25
    assert done["overrides"] == "data=synthetic model.hidden=[16] optimizer=sgd"
    assert diverged["status"] == "diverged" and diverged["diverged_epoch"] == "2"
    assert diverged["test_accuracy"] == "" and diverged["test_loss"] == ""
    assert math.isinf(float(diverged["final_val_loss"]))
    assert diverged["best_epoch"] == "1"
    assert cut["status"] == "incomplete" and cut["epochs_completed"] == "2"
    assert cut["test_accuracy"] == "" and cut["wall_time_s"] == "" and cut["best_epoch"] == ""
    assert missing["status"] == "missing" and missing["epochs_completed"] == "" and missing["final_val_loss"] == ""
    assert missing["overrides"].endswith("optimizer=adamw")
    assert early["status"] == "stopped_early"


def test_sweep_summary_markdown(sweep):
    _, md_path = write_sweep_summary(sweep, figures=False)
    text = md_path.read_text()
    lines = text.splitlines()
    assert lines[0] == f"# Sweep summary: {sweep.name}"
    assert "Overrides common to every job: `data=synthetic model.hidden=[16]`" in text
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 5
    assert table[0].startswith("| job | optimizer | optimizer.learning_rate | status | epochs |")
    assert set(table[1]) <= set("|-:")
    assert table[1].count("|") == table[0].count("|")
    assert all(row.count("|") - row.count("\\|") == table[0].count("|") for row in table)
    assert table[2].startswith("| 0 | sgd | – | completed | 3 | 0.6000 | 0.7500 | 0.7000 | 0.7000 | 3 |")
    assert table[3].startswith("| 1 | adam | 10 | diverged (epoch 2) |")
    assert "| incomplete | 2 |" in table[4] and table[4].endswith("| – | – | – | – |")
    assert "| missing | – |" in table[5]
    assert table[6].startswith("| 10 | rmsprop | – | stopped_early |")
    assert "Grouped" not in text  # no seed swept: nothing to group
    assert not (sweep / CURVES_PNG).exists()  # figures=False


def test_sweep_figures_are_valid_pngs(sweep):
    write_sweep_summary(sweep)
    assert_png(sweep / CURVES_PNG)
    assert_png(sweep / FINAL_PNG)
    assert not [p for p in sweep.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temp files
    plain = sweep / "plain.txt"
    plain.write_text("")  # the permissions of an ordinary file (umask), not mkstemp's 0600
    for name in (SUMMARY_CSV, SUMMARY_MD, CURVES_PNG, FINAL_PNG):
        assert (sweep / name).stat().st_mode & 0o777 == plain.stat().st_mode & 0o777, name


def test_figures_handle_thirty_jobs(tmp_path):
    for job in range(30):
        history = [record(e, 1.0 / (e + job / 10), 0.5 + 0.01 * e) for e in range(1, 6)]
        write_run(tmp_path / str(job), [*COMMON, f"trainer.seed={job}", "optimizer=adam"], history, "completed")
    write_sweep_summary(tmp_path)
    assert len(read_csv(tmp_path / SUMMARY_CSV)) == 30
    assert_png(tmp_path / CURVES_PNG)
    assert_png(tmp_path / FINAL_PNG)


def test_runs_that_differ_only_in_the_seed_form_one_group(tmp_path):
    """2 optimizers × 3 seeds: one row per optimizer with mean ± std over its seeds; --group-by regroups."""
    values = {}
    for job, (optimizer, seed) in enumerate((o, s) for o in ("sgd", "adam") for s in (1, 2, 3)):
        accuracy = 0.5 + 0.1 * (optimizer == "adam") + 0.01 * seed
        history = [record(1, 1.0, accuracy - 0.05), record(2, 0.9 - 0.01 * seed, accuracy)]
        write_run(
            tmp_path / str(job), [*COMMON, f"optimizer={optimizer}", f"trainer.seed={seed}"], history, "completed"
        )
        values.setdefault(optimizer, []).append(history[-1]["val/accuracy"])
    assert main([str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "sweep_groups.csv")
    assert [(row["optimizer"], row["runs"], row["seeds"]) for row in rows] == [
        ("sgd", "3", "1 2 3"),
        ("adam", "3", "1 2 3"),
    ]
    for row in rows:
        expected = values[row["optimizer"]]
        assert float(row["final_val_accuracy_mean"]) == pytest.approx(statistics.fmean(expected))
        assert float(row["final_val_accuracy_std"]) == pytest.approx(statistics.stdev(expected))
        assert float(row["final_val_accuracy_min"]) == pytest.approx(min(expected))
        assert float(row["final_val_accuracy_max"]) == pytest.approx(max(expected))
    text = (tmp_path / SUMMARY_MD).read_text()
    assert "## Grouped by optimizer: mean ± std over each group's runs" in text
    assert (
        "| sgd | 3 | " in text
        and f"{statistics.fmean(values['sgd']):.4f} ± {statistics.stdev(values['sgd']):.4f}" in text
    )
    assert_png(tmp_path / CURVES_PNG)

    assert main([str(tmp_path), "--group-by", "trainer.seed", "--no-figures"]) == 0
    regrouped = read_csv(tmp_path / "sweep_groups.csv")
    assert [(row["trainer.seed"], row["runs"]) for row in regrouped] == [("1", "2"), ("2", "2"), ("3", "2")]


def test_report_reads_a_tuning_study_and_skips_other_commands_folders(tmp_path):
    study = tmp_path / "study"
    (study / ".hydra").mkdir(parents=True)
    (study / ".hydra" / "config.yaml").write_text("tune: {n_trials: 2}\ntrainer: {epochs: 1}\n")
    for trial in ("0", "1"):
        write_run(
            study / "trials" / trial, [f"optimizer.learning_rate=0.0{trial}1"], [record(1, 0.5, 0.8)], "completed"
        )
    for folder, config in (("lr_finder", "lr_finder: {}\ntrainer: {}\n"), ("signal", "layers: 10\nwidth: 5\n")):
        (tmp_path / folder / ".hydra").mkdir(parents=True)
        (tmp_path / folder / ".hydra" / "config.yaml").write_text(config)
    runs = collect_runs(tmp_path)
    assert [run.job for run in runs] == ["study/trials/0", "study/trials/1"]


def test_write_sweep_summary_without_runs_raises(tmp_path):
    with pytest.raises(NoRunsError):
        write_sweep_summary(tmp_path)


def test_main_in_process(sweep, capsys):
    assert main([str(sweep), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "rmsprop" in out and "val_acc" in out and "| " not in out  # the terminal gets the Rich table
    full = (sweep / SUMMARY_MD).read_text()  # the file keeps every column
    assert "| job | optimizer | optimizer.learning_rate | status |" in full and "| 10 | rmsprop | – |" in full
    assert (sweep / SUMMARY_CSV).is_file() and not (sweep / FINAL_PNG).exists()


def report_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_command(*args, cwd=cwd, module="deeprun.commands.report")


def test_deeprun_report_command(sweep, tmp_path):
    result = report_cli(str(sweep), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("wrote ")]
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)  # a Rich table, 80 columns wide here
    header = next(line for line in lines if "status" in line and "job" in line)
    assert "optimizer" in header and "val_acc" in header and "overrides" not in header
    assert any("adam" in line and "diverged (epoch 2)" in line for line in lines)
    for name in (SUMMARY_CSV, SUMMARY_MD):
        assert (sweep / name).is_file()
    for name in (CURVES_PNG, FINAL_PNG):
        assert_png(sweep / name)


def test_deeprun_report_rejects_a_missing_or_empty_folder(tmp_path):
    result = report_cli(str(tmp_path / "absent"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "absent" in result.stderr
    (tmp_path / "empty").mkdir()
    result = report_cli("empty", cwd=tmp_path)
    assert result.returncode == 2 and "no runs" in result.stderr
    # The installed console script exits with the same status (make stops on it).
    script = "import sys; from deeprun.commands.entry import deeprun_report; sys.argv[1:] = ['empty']; deeprun_report()"
    entry = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert entry.returncode == 2 and "no runs" in entry.stderr


def test_callback_never_raises(tmp_path, caplog):
    from omegaconf import OmegaConf

    SweepSummary().on_multirun_end(OmegaConf.create({}))  # not even a sweep dir: a warning, no exception
    assert "sweep summary" in caplog.text


def test_a_sweep_of_zero_jobs_is_bad_input(tmp_path, capsys):
    from omegaconf import OmegaConf

    from deeprun.runs.ownership import claim

    sweep = claim(tmp_path / "sweep")  # as the guard claims it, creating it
    (sweep / "multirun.yaml").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert exit_info.value.code == 2
    assert "the sweep expands to zero jobs" in capsys.readouterr().err
    assert not sweep.exists()


def test_sweep_writes_its_summary_at_the_end(tmp_path):
    """End to end: `deeprun -m` runs the callback registered in conf/config.yaml."""
    result = invoke(
        deeprun_main,
        "-m",
        "data=synthetic",
        "model.hidden=[16]",
        "trainer.epochs=1",
        "trainer.checkpoint=false",
        "optimizer=sgd,adam",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    sweeps = list((tmp_path / "outputs" / "sweeps" / "default").iterdir())
    assert len(sweeps) == 1
    sweep_dir = sweeps[0]
    rows = read_csv(sweep_dir / SUMMARY_CSV)
    assert [row["job"] for row in rows] == ["0", "1"]
    assert [row["overrides"].split()[-1] for row in rows] == ["optimizer=sgd", "optimizer=adam"]
    assert all(row["status"] == "completed" and row["epochs_completed"] == "1" for row in rows)
    assert_png(sweep_dir / CURVES_PNG)
    assert_png(sweep_dir / FINAL_PNG)
    assert "sweep summary:" in result.stdout and SUMMARY_MD in result.stdout
