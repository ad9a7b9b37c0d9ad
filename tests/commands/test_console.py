"""What the console prints at the end of a run: words a reader would write."""

from __future__ import annotations

import io

from rich.console import Console

from deeprun.commands.console import download_bar, epochs_text, results_table, summary_line


def _summary(epochs: int, best_epoch: int | None) -> dict:
    return {
        "name": "default",
        "status": "completed",
        "epochs_completed": epochs,
        "best_epoch": best_epoch,
        "final": {"train/loss": 0.5, "val/loss": 0.4, "train/accuracy": 0.8, "val/accuracy": 0.85},
        "best": {"val/loss": 0.4, "val/accuracy": 0.85} if best_epoch else None,
        "test": {"loss": 0.45, "accuracy": 0.84},
        "params": {"total": 266_610, "trainable": 266_610},
        "compile_time_s": 2.2,
        "steady_epoch_time_s": 1.31,
    }


def _rendered(summary: dict) -> str:
    out = io.StringIO()
    Console(file=out, width=80).print(results_table(summary))
    return out.getvalue()


def test_one_epoch_is_singular_and_an_unknown_best_epoch_is_not_printed():
    assert epochs_text(1) == "1 epoch" and epochs_text(3) == "3 epochs"
    text = _rendered(_summary(1, None))
    assert "after 1 epoch\n" in text or "after 1 epoch " in text
    assert "None" not in text and "best val" in text
    assert "completed after 1 epoch " in summary_line("default #0", _summary(1, None)) + " "
    assert "best val (epoch 3)" in _rendered(_summary(3, 3))


def test_the_caption_breaks_between_phrases_at_80_columns():
    lines = [line.strip() for line in _rendered(_summary(3, 3)).splitlines()]
    assert "266,610 params (266,610 trainable)" in lines
    assert "compile 2.2s · steady epoch 1.31s" in lines


def test_a_download_shows_its_size_and_speed():
    out = io.StringIO()
    with download_bar("train-images-idx3-ubyte.gz", 3_000_000, Console(file=out, width=120)) as advance:
        for _ in range(3):
            advance(1_000_000)
    line = out.getvalue()
    assert line.startswith("downloading train-images-idx3-ubyte.gz") and "3.0/3.0 MB" in line and "B/s" in line
