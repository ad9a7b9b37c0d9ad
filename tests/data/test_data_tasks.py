"""Tests of Fashion-MNIST's transfer-learning tasks A and B (spec §2, §3.3): class selection and
relabelling, ``train_limit``, and the split sizes the book reports on the real data (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deeprun.data.base import DATASETS, Dataset, make_dataset, select_classes, task_classes
from deeprun.data.fashion_mnist import FASHION_MNIST_CLASS_NAMES, FASHION_MNIST_MD5, FashionMNIST
from deeprun.data.storage import find_all_files
from deeprun.registry import ConfigError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


# The notebooks' own ``split_dataset`` functions, kept close to the original code as references.


def select_task(x, y, task, edition):
    """Fashion-MNIST images and labels of a transfer-learning task (the book's ``split_dataset``)."""
    classes = task_classes(task, edition)
    return (x, y.astype(np.int32)) if classes is None else select_classes(x, y, classes)


def book_split_3rd(x: np.ndarray, y: np.ndarray) -> tuple[tuple, tuple]:
    pos_class_id, neg_class_id = 2, 0  # Pullover, T-shirt/top
    y_for_b = (y == pos_class_id) | (y == neg_class_id)
    y_a = y[~y_for_b]
    y_b = (y[y_for_b] == pos_class_id).astype(np.float32)
    old_class_ids = sorted(set(range(10)) - {neg_class_id, pos_class_id})
    for old_class_id, new_class_id in zip(old_class_ids, range(8)):
        y_a[y_a == old_class_id] = new_class_id
    return (x[~y_for_b], y_a), (x[y_for_b], y_b)


def book_split_2nd(x: np.ndarray, y: np.ndarray) -> tuple[tuple, tuple]:
    y_5_or_6 = (y == 5) | (y == 6)  # sandals or shirts
    y_a = y[~y_5_or_6]
    y_a[y_a > 6] -= 2
    y_b = (y[y_5_or_6] == 6).astype(np.float32)  # is it a shirt?
    return (x[~y_5_or_6], y_a), (x[y_5_or_6], y_b)


def random_examples(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixel is their index (to follow them through the selection), random labels."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (count, 4), dtype=np.uint8).astype(np.int64)
    x[:, 0] = np.arange(count)
    return x, rng.integers(0, 10, count).astype(np.uint8)


@pytest.mark.parametrize(("edition", "book_split"), [("3rd", book_split_3rd), ("2nd", book_split_2nd)])
def test_select_task_matches_the_books_split_dataset(edition: str, book_split) -> None:
    x, y = random_examples(500)
    (x_a, y_a), (x_b, y_b) = book_split(x, y.copy())
    for task, (x_book, y_book) in (("A", (x_a, y_a)), ("B", (x_b, y_b))):
        x_task, y_task = select_task(x, y, task, edition)
        np.testing.assert_array_equal(x_task, x_book)
        np.testing.assert_array_equal(y_task, y_book)
        assert y_task.dtype == np.int32
    assert set(np.unique(select_task(x, y, "A", edition)[1])) == set(range(8))


def test_task_classes_by_hand() -> None:
    y = np.arange(10, dtype=np.uint8)
    x = y[:, None] * np.ones((1, 3), np.uint8)
    cases = {
        ("3rd", "A"): ([1, 3, 4, 5, 6, 7, 8, 9], [0, 1, 2, 3, 4, 5, 6, 7]),
        ("3rd", "B"): ([0, 2], [0, 1]),  # label 1 = Pullover
        ("2nd", "A"): ([0, 1, 2, 3, 4, 7, 8, 9], [0, 1, 2, 3, 4, 5, 6, 7]),
        ("2nd", "B"): ([5, 6], [0, 1]),  # label 1 = Shirt
    }
    for (edition, task), (kept, labels) in cases.items():
        x_task, y_task = select_task(x, y, task, edition)
        np.testing.assert_array_equal(x_task[:, 0], kept)
        np.testing.assert_array_equal(y_task, labels)


def test_select_classes_keeps_order_and_relabels_by_position() -> None:
    x = np.arange(8)[:, None]
    y = np.array([3, 1, 0, 3, 2, 1, 0, 3])
    x_kept, y_kept = select_classes(x, y, (3, 1))  # any order: 3 → 0, 1 → 1
    np.testing.assert_array_equal(x_kept[:, 0], [0, 1, 3, 5, 7])
    np.testing.assert_array_equal(y_kept, [0, 1, 0, 1, 0])


def test_task_all_selects_nothing() -> None:
    x, y = random_examples(50)
    assert task_classes("all", "3rd") is None and task_classes("all", "2nd") is None
    x_all, y_all = select_task(x, y, "all", "2nd")
    assert x_all is x
    np.testing.assert_array_equal(y_all, y)


def task_dataset(task: str = "B", edition: str = "3rd", **fields) -> Dataset:
    """A dataset of 10 classes built by make_dataset: 200 full-train images (validation = last 40)."""
    x_full, y_full = random_examples(200, seed=1)
    x_test, y_test = random_examples(60, seed=2)
    options = {"val_size": 40, "validation": "last", "scaling": "unit", **fields}
    return make_dataset(
        "t",
        (x_full.astype(np.uint8).reshape(200, 2, 2), y_full),
        (x_test.astype(np.uint8).reshape(60, 2, 2), y_test),
        class_names=FASHION_MNIST_CLASS_NAMES,
        where="data.val_size",
        classes=task_classes(task, edition),
        **options,
    )


def test_make_dataset_filters_every_split_and_limits_only_train() -> None:
    x_full, y_full = random_examples(200, seed=1)
    _, y_test = random_examples(60, seed=2)
    full = task_dataset()
    limited = task_dataset(train_limit=5)
    b_train, b_val, b_test = (np.isin(y, (0, 2)) for y in (y_full[:160], y_full[160:], y_test))
    assert len(full.y_train) == b_train.sum() > 5
    assert len(full.y_val) == len(limited.y_val) == b_val.sum()
    assert len(full.y_test) == len(limited.y_test) == b_test.sum()
    np.testing.assert_array_equal(limited.pixels_train, full.pixels_train[:5])
    np.testing.assert_array_equal(limited.y_train, full.y_train[:5])
    np.testing.assert_array_equal(full.y_test, y_test[b_test] == 2)
    np.testing.assert_array_equal(full.pixels_val[:, 0], x_full[160:][b_val, 0] % 256)
    assert full.n_classes == 2 and full.class_names == ("T-shirt/top", "Pullover")
    task_a = task_dataset("A", "2nd")
    assert task_a.n_classes == 8 and task_a.class_names[5:] == ("Sneaker", "Bag", "Ankle boot")
    assert task_a.input_shape == (2, 2) and task_a.y_train.dtype == np.int32


def test_standardize_uses_the_selected_and_limited_train_split() -> None:
    dataset = task_dataset(scaling="standardize", train_limit=20)
    np.testing.assert_allclose(dataset.x_train.mean(axis=0), 0, atol=1e-6)
    unit = dataset.pixels_train / 255.0
    expected = (dataset.pixels_val / 255.0 - unit.mean(axis=0)) / unit.std(axis=0)
    np.testing.assert_allclose(dataset.x_val, expected, rtol=1e-5, atol=1e-5)


def test_train_limit_beyond_the_train_split_is_an_error() -> None:
    n_train = len(task_dataset().y_train)
    assert len(task_dataset(train_limit=n_train).y_train) == n_train
    with pytest.raises(ConfigError, match=f"data.train_limit must be between 1 and {n_train}"):
        task_dataset(train_limit=n_train + 1)
    with pytest.raises(ConfigError, match="data.train_limit"):
        task_dataset(task="all", train_limit=0)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"task": "C"}, "task must be one of all, A, B"),
        ({"task_edition": "1st"}, "task_edition"),
        ({"train_limit": 0}, "data.train_limit"),
        ({"train_limit": -3}, "data.train_limit"),
        ({"train_limit": 2.5}, "train_limit must be an integer"),
    ],
)
def test_bad_task_config_is_rejected(config: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DATASETS.build({"name": "fashion_mnist", **config})


def test_task_fields_are_checked_without_the_registry() -> None:
    with pytest.raises(ConfigError, match="data.task "):
        FashionMNIST(task="b")
    with pytest.raises(ConfigError, match="data.task_edition"):
        FashionMNIST(task_edition="3")
    assert DATASETS.build({"name": "fashion_mnist", "task": "B", "train_limit": 200}).train_limit == 200


# --- the real dataset -----------------------------------------------------------------------------


def real_fashion_mnist(**fields) -> Dataset:
    if find_all_files(FASHION_MNIST_DIR, list(FASHION_MNIST_MD5)) is None:
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
    return FashionMNIST(root=str(FASHION_MNIST_DIR), download=False, **fields).load()


@pytest.mark.slow
def test_real_tasks_2nd_edition() -> None:
    """Spec §2: X_train_A has shape (43986, 28, 28); X_train_B = first 200; test B = 2,000 images."""
    task_a = real_fashion_mnist(validation="first", task="A", task_edition="2nd")
    task_b = real_fashion_mnist(validation="first", task="B", task_edition="2nd", train_limit=200)
    assert task_a.pixels_train.shape == (43_986, 784) and task_a.n_classes == 8
    assert len(task_a.y_test) == 8_000 and len(task_a.y_val) + len(task_a.y_train) == 48_000
    assert task_b.pixels_train.shape == (200, 784) and len(task_b.y_test) == 2_000
    assert task_b.class_names == ("Sandal", "Shirt")
    np.testing.assert_array_equal(np.bincount(task_b.y_test), [1000, 1000])
    everything = real_fashion_mnist(validation="first")
    is_b = np.isin(everything.y_train, (5, 6))
    np.testing.assert_array_equal(task_b.pixels_train, everything.pixels_train[is_b][:200])
    np.testing.assert_array_equal(task_b.y_train, everything.y_train[is_b][:200] == 6)


@pytest.mark.slow
def test_real_tasks_3rd_edition() -> None:
    """Spec §2: train A ≈ 44k (1,376 batches of 32); train B = 200 images (7 batches); test B = 2,000
    images (63 batches); label 1 = Pullover."""
    task_a = real_fashion_mnist(task="A")
    task_b = real_fashion_mnist(task="B", train_limit=200)
    assert -(-len(task_a.y_train) // 32) == 1_376 and task_a.n_classes == 8
    assert task_a.class_names[0] == "Trouser" and task_a.class_names[-1] == "Ankle boot"
    assert len(task_b.y_train) == 200 and -(-len(task_b.y_test) // 32) == 63 and len(task_b.y_test) == 2_000
    assert task_b.class_names == ("T-shirt/top", "Pullover")
    everything = real_fashion_mnist()
    is_b = np.isin(everything.y_test, (0, 2))
    np.testing.assert_array_equal(task_b.y_test, everything.y_test[is_b] == 2)
    np.testing.assert_array_equal(task_b.x_test, everything.x_test[is_b])
