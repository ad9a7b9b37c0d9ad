"""``data=arrays``: a user's own ``.npz`` file or folder of ``.npy`` files, with no code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deeprun.commands.evaluate import main as eval_main
from deeprun.commands.run import main as deeprun_main
from deeprun.data import DATASETS, DataError
from helpers.commands import invoke


def arrays(n_train: int = 90, n_test: int = 30, dtype=np.uint8, classes: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n_train + n_test, 5, 4)).astype(dtype)
    y = rng.integers(0, classes, n_train + n_test)
    y[:classes] = np.arange(classes)  # every class in the training split
    return {"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:]}


def load(path: Path, **fields):
    return DATASETS.build({"name": "arrays", "path": str(path), **fields}).load()


def test_an_npz_with_its_own_validation_split(tmp_path):
    data = arrays()
    x_val, y_val = data["x_test"][:10], data["y_test"][:10]
    np.savez(tmp_path / "mine.npz", **data, x_val=x_val, y_val=y_val)
    dataset = load(tmp_path / "mine.npz")
    assert (len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)) == (90, 10, 30)
    assert dataset.n_classes == 3 and dataset.input_shape == (5, 4) and dataset.n_features == 20
    np.testing.assert_array_equal(dataset.pixels_val, x_val.reshape(10, -1))
    np.testing.assert_array_equal(dataset.y_train, data["y_train"])
    np.testing.assert_allclose(dataset.x_train, data["x_train"].reshape(90, -1) / np.float32(255))  # auto: unit


def test_a_folder_of_float_npy_files_is_split_and_kept_raw(tmp_path):
    data = arrays(dtype=np.float64)
    for name, array in data.items():
        np.save(tmp_path / f"{name}.npy", array)
    dataset = load(tmp_path, validation="first", val_size=15)
    assert (len(dataset.y_train), len(dataset.y_val)) == (75, 15)
    np.testing.assert_array_equal(dataset.x_val, data["x_train"][:15].reshape(15, -1).astype(np.float32))
    standardized = load(tmp_path, val_size=15, scaling="standardize")
    np.testing.assert_allclose(standardized.x_train.mean(axis=0), 0, atol=1e-5)


def _write(tmp_path: Path, **changes) -> Path:
    data = {**arrays(), **changes}
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in data.items() if v is not None})
    return tmp_path / "bad.npz"


BAD = [
    ({"y_test": None}, "has no y_test (it holds: x_test, x_train, y_train)"),
    ({"y_train": np.zeros(89, np.int64)}, "y_train has shape (89,); x_train has 90 examples"),
    ({"x_test": np.zeros((30, 4, 5), np.uint8)}, "x_test has examples of shape (4, 5), x_train (5, 4)"),
    ({"y_test": np.full(30, 7)}, "y_test holds label 7, but y_train's classes are 0..2"),
    ({"y_train": np.full(90, -1)}, "y_train must hold integer labels 0..K-1"),
    ({"y_train": np.zeros(90, np.float32)}, "y_train must hold integer labels 0..K-1 (dtype float32)"),
    ({"x_train": np.full((90, 5, 4), np.nan)}, "x_train holds NaN or infinite values"),
    ({"x_val": np.zeros((3, 5, 4), np.uint8)}, "holds x_val without its partner"),
    ({"x_train": np.zeros((90, 5, 4), np.int16)}, "x_train must be uint8 or floating point (dtype int16)"),
]


@pytest.mark.parametrize(("changes", "fragment"), BAD, ids=[fragment.split(" ")[0] for _, fragment in BAD])
def test_a_bad_file_is_one_line_naming_the_array(changes, fragment, tmp_path):
    with pytest.raises(DataError, match=None) as error:
        load(_write(tmp_path, **changes))
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_path_that_is_not_an_npz_file(tmp_path):
    (tmp_path / "notes.npz").write_text("hello")
    with pytest.raises(DataError, match="is not a readable .npz file"):
        load(tmp_path / "notes.npz")
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "nowhere.npz")


def test_the_command_trains_on_it_and_the_run_reads_back_from_anywhere(tmp_path):
    np.savez(tmp_path / "mine.npz", **arrays(n_train=200, n_test=50))
    run = tmp_path / "run"
    args = ("data=arrays", "data.path=mine.npz", "model.hidden=[8]", "trainer.epochs=2", "trainer.plots=false")
    result = invoke(deeprun_main, *args, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"path: {tmp_path / 'mine.npz'}" in (run / ".hydra" / "config.yaml").read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    evaluated = invoke(eval_main, str(run), cwd=elsewhere, program="deeprun-eval")
    assert evaluated.returncode == 0, evaluated.stderr
