"""Tests of deeprun.data: IDX decoding, file lookup, download, decoded cache, splits, scaling, synthetic data.

Fashion-MNIST tests run on small generated IDX files: the expected split sizes, checksums and MD5s are
module constants that the fixtures point at the generated files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from deeprun.data import fashion_mnist
from deeprun.data.base import DATASETS, DataError, Dataset, pixel_scaling, pixel_statistics, split_validation
from deeprun.data.fashion_mnist import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    FashionMNIST,
    decoded_sha256,
    fashion_mnist_cache_dir,
    locate_fashion_mnist,
)
from deeprun.data.storage import cache_dir, find_all_files, shown_downloads
from deeprun.data.synthetic import Synthetic
from deeprun.registry import ConfigError
from deeprun.settings import CONFIG_DIR
from helpers.datasets import write_idx

CONF_DIR = CONFIG_DIR / "data"
N_FULL, N_TEST, VAL_SIZE = 40, 10, 8


def scale(x_train, x_val, x_test, scaling):
    """Every split scaled with the train split's statistics, as the notebooks do."""
    scaler = pixel_scaling(x_train, scaling)
    return scaler.apply(x_train), scaler.apply(x_val), scaler.apply(x_test)


@dataclasses.dataclass(frozen=True)
class FakeFashion:
    """Small generated stand-in for Fashion-MNIST: uint8 ``(images, labels)`` per split."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]

    def write(self, directory: Path) -> dict[str, str]:
        """Write the four .gz files into ``directory``; return their MD5s by file name."""
        train_split, test_split = fashion_mnist.FASHION_MNIST_SPLITS
        md5 = {}
        for split, (images, labels) in ((train_split, self.train), (test_split, self.test)):
            for name, array in ((split.images_file, images), (split.labels_file, labels)):
                md5[name] = hashlib.md5(write_idx(directory / name, array).read_bytes()).hexdigest()
        return md5


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Move every lookup location into tmp_path, so no real copy or user cache takes part."""
    monkeypatch.setenv("DEEPRUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEPRUN_DATA", raising=False)
    monkeypatch.delenv("DEEPRUN_FASHION_MNIST_URL", raising=False)
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    return tmp_path


@pytest.fixture
def fake(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> FakeFashion:
    """Generated data, with the expected split sizes and checksums set to match it."""
    rng = np.random.default_rng(0)

    def make(count: int) -> tuple[np.ndarray, np.ndarray]:
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        return images, (np.arange(count) % 10).astype(np.uint8)

    fake = FakeFashion(train=make(N_FULL), test=make(N_TEST))
    splits = tuple(
        dataclasses.replace(split, count=len(labels), sha256=decoded_sha256(images, labels))
        for split, (images, labels) in zip(fashion_mnist.FASHION_MNIST_SPLITS, (fake.train, fake.test))
    )
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SPLITS", splits)
    return fake


def fashion(**fields) -> FashionMNIST:
    return FashionMNIST(**{"val_size": VAL_SIZE, "download": False, **fields})


def decoded_cache_files() -> list[Path]:
    return sorted(fashion_mnist_cache_dir().glob("decoded-*.npy"))


# --- IDX decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["images-idx3-ubyte.gz", "images-idx3-ubyte"])
def test_read_idx_round_trip(tmp_path: Path, name: str) -> None:
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    decoded = fashion_mnist.read_idx(write_idx(tmp_path / name, images), IDX_IMAGES_MAGIC)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, images)


def test_bad_magic_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x.gz", np.zeros((2, 28, 28), np.uint8), magic=IDX_LABELS_MAGIC)
    with pytest.raises(DataError, match="magic number 2049") as err:
        fashion_mnist.read_idx(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(err.value)


def test_truncated_data_is_an_error(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated") as err:
        fashion_mnist.read_idx(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(err.value)


def test_truncated_gzip_stream_is_an_error(tmp_path: Path) -> None:
    images = np.random.default_rng(2).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "x.gz", images)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match="corrupt") as err:
        fashion_mnist.read_idx(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(err.value)


def test_checksum_mismatch_is_an_error(fake: FakeFashion, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.write(fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    train, test = fashion_mnist.FASHION_MNIST_SPLITS
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SPLITS", (dataclasses.replace(train, sha256="0" * 64), test))
    with pytest.raises(DataError, match="SHA-256") as err:
        fashion().load()
    assert train.images_file in str(err.value)


def test_wrong_image_count_is_an_error(fake: FakeFashion, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.write(fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    train, test = fashion_mnist.FASHION_MNIST_SPLITS
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SPLITS", (train, dataclasses.replace(test, count=N_TEST + 1)))
    with pytest.raises(DataError, match=test.images_file):
        fashion().load()


def test_label_out_of_range_is_an_error(fake: FakeFashion) -> None:
    fake.write(fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    labels = fake.test[1].copy()
    labels[0] = 10
    write_idx(fashion_mnist.FASHION_MNIST_SYSTEM_DIR / fashion_mnist.FASHION_MNIST_SPLITS[1].labels_file, labels)
    with pytest.raises(DataError, match="label 10"):
        fashion().load()


# --- lookup ---------------------------------------------------------------------------------------


def touch_files(directory: Path, uncompressed: bool = False) -> Path:
    """Create empty files under the four names: lookup only checks that they exist."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in fashion_mnist.FASHION_MNIST_MD5:
        (directory / (name.removesuffix(".gz") if uncompressed else name)).touch()
    return directory


def located_dir(root: str | None = None) -> Path:
    paths = set(locate_fashion_mnist(root, download=False).values())
    assert len({path.parent for path in paths}) == 1, "all four files must come from one directory"
    return paths.pop().parent


def test_lookup_order_root_env_cache_system(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = touch_files(isolated / "root")
    env = touch_files(isolated / "env")
    cache = touch_files(fashion_mnist_cache_dir())
    system = touch_files(fashion_mnist.FASHION_MNIST_SYSTEM_DIR, uncompressed=True)
    monkeypatch.setenv("DEEPRUN_DATA", str(env))

    assert located_dir(str(root)) == root
    assert located_dir() == env
    monkeypatch.setenv("DEEPRUN_DATA", str(isolated / "elsewhere"))
    assert located_dir() == cache
    for path in cache.iterdir():
        path.unlink()
    assert located_dir() == system


def test_lookup_env_may_be_a_parent_with_a_fashion_mnist_folder(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nested = touch_files(isolated / "datasets" / "fashion-mnist")
    touch_files(fashion_mnist_cache_dir())
    monkeypatch.setenv("DEEPRUN_DATA", str(isolated / "datasets"))
    assert located_dir() == nested


def test_lookup_never_mixes_files_from_two_directories(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    partial = touch_files(isolated / "env")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    system = touch_files(fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    monkeypatch.setenv("DEEPRUN_DATA", str(partial))
    assert located_dir() == system


def test_root_without_the_files_is_an_error_not_a_fallback(isolated: Path) -> None:
    touch_files(fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    root = touch_files(isolated / "root")
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz") as err:
        fashion(root=str(root), download=True).load()
    assert f"data.root={root}" in str(err.value)
    with pytest.raises(DataError, match=f"data.root={isolated / 'typo'} is not a directory"):
        fashion(root=str(isolated / "typo")).load()


def test_missing_everywhere_without_download_says_how_to_get_the_data(isolated: Path) -> None:
    with pytest.raises(DataError) as err:
        fashion().load()
    message = str(err.value)
    assert isinstance(err.value, ConfigError)
    assert "\n" not in message
    for way in (
        "data.root=",
        "DEEPRUN_DATA=",
        str(fashion_mnist_cache_dir()),
        "apt-get install dataset-fashion-mnist",
        "data.download=true",
        "train-images-idx3-ubyte.gz",
    ):
        assert way in message


def test_cache_dir_prefers_deeprun_cache_dir_then_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("DEEPRUN_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("DEEPRUN_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "deeprun"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "deeprun"


# --- download -------------------------------------------------------------------------------------


@pytest.fixture
def served(fake: FakeFashion, http_server: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake files served over HTTP as the download URL, with their MD5s as the official ones."""
    folder, url = http_server
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_MD5", fake.write(folder))
    monkeypatch.setenv("DEEPRUN_FASHION_MNIST_URL", url + "/")
    return folder


def test_download_over_http_with_md5_check(fake: FakeFashion, served: Path) -> None:
    dataset = fashion(download=True).load()
    downloaded = sorted(path.name for path in fashion_mnist_cache_dir().glob("*.gz"))
    assert downloaded == sorted(fashion_mnist.FASHION_MNIST_MD5)
    np.testing.assert_array_equal(dataset.y_test, fake.test[1])


def test_a_download_reports_its_size_and_every_chunk_to_the_progress_shown(served: Path) -> None:
    seen: dict[str, list[int | None]] = {}

    @contextlib.contextmanager
    def progress(description: str, total: int | None):
        seen[description] = [total]
        yield seen[description].append

    with shown_downloads(progress):
        fashion(download=True).load()
    assert sorted(seen) == sorted(fashion_mnist.FASHION_MNIST_MD5)
    for name, (total, *chunks) in seen.items():
        assert total == (served / name).stat().st_size == sum(chunks), name


def test_download_with_bad_md5_is_rejected_and_leaves_nothing(
    fake: FakeFashion, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = isolated / "served"
    md5 = fake.write(served)
    md5["t10k-images-idx3-ubyte.gz"] = "0" * 32
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_MD5", md5)
    monkeypatch.setenv("DEEPRUN_FASHION_MNIST_URL", served.as_uri())
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz has MD5"):
        fashion(download=True).load()
    kept = sorted(p.name for p in fashion_mnist_cache_dir().iterdir())
    assert kept == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]  # no partial or temp file


def test_download_failure_says_how_to_get_the_data(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPRUN_FASHION_MNIST_URL", (isolated / "nowhere").as_uri())
    with pytest.raises(DataError, match="could not download .*train-images-idx3-ubyte.gz") as err:
        fashion(download=True).load()
    assert "apt-get install dataset-fashion-mnist" in str(err.value)


def test_download_fetches_only_missing_files(
    fake: FakeFashion, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = isolated / "served"
    md5 = fake.write(served)
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_MD5", md5)
    fake.write(fashion_mnist_cache_dir())
    (fashion_mnist_cache_dir() / "train-labels-idx1-ubyte.gz").unlink()
    for name in md5:
        if name != "train-labels-idx1-ubyte.gz":
            (served / name).unlink()
    monkeypatch.setenv("DEEPRUN_FASHION_MNIST_URL", served.as_uri())
    np.testing.assert_array_equal(fashion(download=True).load().y_val, fake.train[1][-VAL_SIZE:])


# --- decoded cache --------------------------------------------------------------------------------


def test_decoded_cache_is_written_once_and_reused(fake: FakeFashion, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.write(fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    first = fashion().load()
    cached = decoded_cache_files()
    assert len(cached) == 4
    written = {path: path.stat().st_mtime_ns for path in cached}

    def no_decoding(*args: object) -> None:
        raise AssertionError("the IDX decoder ran although the decoded cache exists")

    monkeypatch.setattr(fashion_mnist, "read_idx", no_decoding)
    second = fashion().load()
    np.testing.assert_array_equal(second.x_train, first.x_train)
    np.testing.assert_array_equal(second.y_test, first.y_test)
    assert {path: path.stat().st_mtime_ns for path in decoded_cache_files()} == written


def test_an_altered_decoded_cache_is_rebuilt_not_trusted(fake: FakeFashion) -> None:
    """Labels changed in the cache (all set to one class: "val accuracy 1.000") no longer match the
    fingerprint written beside it: a warning, and the arrays come from the checksummed IDX files again."""
    fake.write(fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    first = fashion().load()
    [train_labels] = [p for p in decoded_cache_files() if "train" in p.name and p.name.endswith("labels.npy")]
    np.save(train_labels, np.zeros_like(np.load(train_labels)))
    with pytest.warns(UserWarning, match="was altered; rebuilding it"):
        second = fashion().load()
    np.testing.assert_array_equal(second.y_train, first.y_train)
    np.testing.assert_array_equal(second.y_val, first.y_val)
    third = fashion().load()  # the rebuilt cache is trusted again
    np.testing.assert_array_equal(third.y_train, first.y_train)


def test_a_decoded_cache_without_its_fingerprint_is_a_miss(fake: FakeFashion, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.write(fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    fashion().load()
    for fingerprint in fashion_mnist_cache_dir().glob("*.blake2b"):
        fingerprint.unlink()
    decoded = []
    original = fashion_mnist.read_idx
    monkeypatch.setattr(fashion_mnist, "read_idx", lambda *args: decoded.append(args) or original(*args))
    fashion().load()
    assert decoded, "a cache without its fingerprint was read"
    assert len(list(fashion_mnist_cache_dir().glob("*.blake2b"))) == 2


def test_cache_false_neither_reads_nor_writes_the_decoded_cache(
    fake: FakeFashion, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.write(fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    fashion(cache=False).load()
    assert decoded_cache_files() == []
    fashion().load()
    calls = []
    real_read_idx = fashion_mnist.read_idx

    def counting_read_idx(*args: object) -> np.ndarray:
        calls.append(args)
        return real_read_idx(*args)

    monkeypatch.setattr(fashion_mnist, "read_idx", counting_read_idx)
    fashion(cache=False).load()
    assert len(calls) == 4


def test_broken_decoded_cache_is_rebuilt(fake: FakeFashion) -> None:
    fake.write(fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    fashion().load()
    broken = decoded_cache_files()[0]
    broken.write_bytes(broken.read_bytes()[:100])
    np.testing.assert_array_equal(fashion().load().y_test, fake.test[1])
    assert broken.stat().st_size > 100


# --- splits and scaling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("validation", "train_indices", "val_indices"),
    [("last", range(0, 7), range(7, 10)), ("first", range(3, 10), range(0, 3))],
)
def test_split_validation_indices(validation: str, train_indices: range, val_indices: range) -> None:
    x, y = np.arange(10)[:, None] * np.ones((1, 2)), np.arange(10)
    _, y_train, x_val, y_val = split_validation(x, y, val_size=3, validation=validation, where="w")
    np.testing.assert_array_equal(y_train, list(train_indices))
    np.testing.assert_array_equal(y_val, list(val_indices))
    np.testing.assert_array_equal(x_val[:, 0], list(val_indices))


@pytest.mark.parametrize("val_size", [0, 10])
def test_split_validation_rejects_sizes_leaving_an_empty_split(val_size: int) -> None:
    with pytest.raises(ConfigError, match="data.val_size"):
        split_validation(np.zeros((10, 1)), np.zeros(10), val_size=val_size, validation="last", where="data.val_size")


@pytest.mark.parametrize("validation", ["last", "first"])
def test_fashion_mnist_split_and_unit_scaling(fake: FakeFashion, validation: str) -> None:
    fake.write(fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    dataset = fashion(validation=validation).load()
    images, labels = fake.train
    train_part, val_part = (slice(0, -VAL_SIZE), slice(-VAL_SIZE, None))
    if validation == "first":
        train_part, val_part = slice(VAL_SIZE, None), slice(0, VAL_SIZE)
    np.testing.assert_array_equal(dataset.y_train, labels[train_part])
    np.testing.assert_array_equal(dataset.y_val, labels[val_part])
    np.testing.assert_array_equal(dataset.x_val, images[val_part].reshape(VAL_SIZE, 784) / np.float32(255))
    assert dataset.x_train.shape == (N_FULL - VAL_SIZE, 784) and dataset.x_test.shape == (N_TEST, 784)
    assert {dataset.x_train.dtype, dataset.x_val.dtype, dataset.x_test.dtype} == {np.dtype(np.float32)}
    assert {dataset.y_train.dtype, dataset.y_val.dtype, dataset.y_test.dtype} == {np.dtype(np.int32)}
    assert dataset.x_train.min() >= 0.0 and dataset.x_train.max() <= 1.0
    assert dataset.input_shape == (28, 28) and dataset.n_features == 784 and dataset.n_classes == 10
    assert dataset.class_names[0] == "T-shirt/top" and dataset.class_names[9] == "Ankle boot"


def test_fashion_mnist_task_b_with_train_limit(fake: FakeFashion) -> None:
    """Labels are index % 10: train = images 0..31, valid = 32..39; B = T-shirt/top (0) and Pullover (2)."""
    fake.write(fashion_mnist.FASHION_MNIST_SYSTEM_DIR)
    dataset = fashion(task="B", train_limit=3).load()
    images = fake.train[0].reshape(N_FULL, 784)
    np.testing.assert_array_equal(dataset.pixels_train, images[[0, 2, 10]])
    np.testing.assert_array_equal(dataset.y_train, [0, 1, 0])
    np.testing.assert_array_equal(dataset.pixels_val, images[[32]])
    np.testing.assert_array_equal(dataset.y_val, [1])
    np.testing.assert_array_equal(dataset.pixels_test, fake.test[0].reshape(N_TEST, 784)[[0, 2]])
    assert dataset.n_classes == 2 and dataset.class_names == ("T-shirt/top", "Pullover")
    task_a = fashion(task="A", task_edition="2nd", validation="first").load()
    np.testing.assert_array_equal(task_a.y_test, [0, 1, 2, 3, 4, 5, 6, 7])  # 7, 8, 9 moved down by 2
    np.testing.assert_array_equal(task_a.y_train[:3], [6, 7, 0])  # images 8, 9, 10: Bag, Ankle boot, T-shirt
    assert len(task_a.y_train) == (~np.isin(np.arange(VAL_SIZE, N_FULL) % 10, (5, 6))).sum()


def test_raw_scaling_keeps_pixel_values() -> None:
    x = np.arange(256, dtype=np.uint8)[None, :]
    for s in scale(x, x, x, "raw"):
        assert s.dtype == np.float32
        np.testing.assert_array_equal(s, x.astype(np.float32))
    assert pixel_scaling(x, "unit").divisor == 255 and pixel_scaling(x, "raw").divisor == 1


def test_standardize_uses_train_statistics_for_every_split() -> None:
    rng = np.random.default_rng(3)
    x_train, x_val, x_test = (rng.integers(0, 256, (n, 6), dtype=np.uint8) for n in (50, 7, 9))
    x_train[:, 5] = 17  # a constant pixel must not produce NaN or inf
    scaled_train, scaled_val, scaled_test = scale(x_train, x_val, x_test, "standardize")
    np.testing.assert_allclose(scaled_train.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(scaled_train.std(axis=0)[:5], 1, rtol=1e-5)
    np.testing.assert_array_equal(scaled_train[:, 5], 0)
    unit_train = x_train / 255.0
    mean, std = unit_train.mean(axis=0), unit_train.std(axis=0)
    std[5] = 1
    for raw, scaled in ((x_val, scaled_val), (x_test, scaled_test)):
        assert scaled.dtype == np.float32
        np.testing.assert_allclose(scaled, (raw / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)


def test_pixel_statistics_are_exact_float64() -> None:
    pixels = np.random.default_rng(4).integers(0, 256, (10_000, 3), dtype=np.uint8)
    pixels[:, 2] = 250
    mean, std = pixel_statistics(pixels, chunk_rows=999)
    np.testing.assert_allclose(mean, pixels.sum(axis=0, dtype=np.int64) / len(pixels) / 255, rtol=1e-15)
    np.testing.assert_allclose(std[:2], (pixels / 255.0).std(axis=0)[:2], rtol=1e-10)
    assert std[2] == 0


def test_unit_scaling_is_division_by_255() -> None:
    x = np.arange(256, dtype=np.uint8)[None, :]
    scaled = scale(x, x, x, "unit")
    for s in scaled:
        assert s.dtype == np.float32
        np.testing.assert_array_equal(s, (x / 255.0).astype(np.float32))


# --- synthetic ------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_seeded() -> None:
    a, b = Synthetic().load(), Synthetic().load()
    other = Synthetic(seed=1).load()
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x_train, other.x_train)
    assert a.x_train.shape == (512, 64) and a.x_val.shape == (128, 64) and a.x_test.shape == (128, 64)
    assert a.input_shape == (8, 8) and a.n_features == 64 and a.n_classes == len(a.class_names) == 10
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int32


def nearest_class_mean_accuracy(dataset: Dataset) -> float:
    """Test accuracy of classifying by the closest per-class mean of the train split."""
    classes = range(dataset.n_classes)
    means = np.stack([dataset.x_train[dataset.y_train == c].mean(axis=0) for c in classes])
    distances = ((dataset.x_test[:, None, :] - means[None]) ** 2).sum(axis=-1)
    return float((distances.argmin(axis=1) == dataset.y_test).mean())


def test_synthetic_is_learnable() -> None:
    """Class means differ enough to classify far above chance (0.1), and noise sets the difficulty."""
    default = Synthetic().load()
    assert np.bincount(default.y_test, minlength=10).min() > 0
    assert nearest_class_mean_accuracy(default) > 0.4  # about 0.6 at the default noise 1.0
    assert nearest_class_mean_accuracy(Synthetic(noise=0.5).load()) > 0.95


def test_synthetic_standardize_uses_the_unit_train_statistics() -> None:
    unit = Synthetic().load()
    standardized = Synthetic(scaling="standardize").load()
    mean, std = unit.x_train.mean(axis=0), unit.x_train.std(axis=0)
    np.testing.assert_allclose(standardized.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(standardized.x_val, (unit.x_val - mean) / std, atol=1e-4)
    np.testing.assert_allclose(standardized.x_test, (unit.x_test - mean) / std, atol=1e-4)


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"name": "fashion_mnist", "val_size": 0}, "data.val_size"),
        ({"name": "fashion_mnist", "val_size": 60_000}, "data.val_size"),
        ({"name": "fashion_mnist", "validation": "middle"}, "validation"),
        ({"name": "fashion_mnist", "scaling": "minmax"}, "scaling"),
        ({"name": "fashion_mnist", "root": ""}, "data.root"),
        ({"name": "fashion_mnist", "download": "yes"}, "download"),
        ({"name": "fashion_mnist", "shuffle": True}, "shuffle"),
        ({"name": "synthetic", "n_train": 0}, "data.n_train"),
        ({"name": "synthetic", "n_test": -1}, "data.n_test"),
        ({"name": "synthetic", "image_size": 0}, "data.image_size"),
        ({"name": "synthetic", "n_classes": 1}, "data.n_classes"),
        ({"name": "synthetic", "noise": -0.1}, "data.noise"),
        ({"name": "mnist"}, "mnist"),
    ],
)
def test_bad_config_is_rejected(config: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DATASETS.build(config)


@pytest.mark.parametrize(
    ("cls", "field", "value"), [(FashionMNIST, "validation", "middle"), (Synthetic, "scaling", "z")]
)
def test_literal_fields_are_checked_without_the_registry(cls: type, field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"data.{field}"):
        cls(**{field: value})


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "synthetic"])
def test_yaml_writes_out_every_default(name: str) -> None:
    config = yaml.safe_load((CONF_DIR / f"{name}.yaml").read_text())
    fields = {f.name for f in dataclasses.fields(DATASETS.get(name))}
    assert set(config) == {"name", *fields}
    assert DATASETS.build(config) == DATASETS.default(name)


# --- the real dataset -----------------------------------------------------------------------------


@pytest.mark.slow
def test_real_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = Path("/usr/share/datasets/fashion-mnist")
    if find_all_files(system, list(fashion_mnist.FASHION_MNIST_MD5)) is None:
        pytest.skip(f"Fashion-MNIST is not installed in {system} (apt-get install dataset-fashion-mnist)")
    monkeypatch.setenv("DEEPRUN_CACHE_DIR", str(tmp_path))
    last = FashionMNIST(root=str(system), download=False).load()
    first = FashionMNIST(root=str(system), download=False, validation="first").load()
    assert len(decoded_cache_files()) == 4

    for dataset in (last, first):
        assert dataset.x_train.shape == (55_000, 784)
        assert dataset.x_val.shape == (5_000, 784)
        assert dataset.x_test.shape == (10_000, 784)
        full_labels = np.concatenate([dataset.y_train, dataset.y_val])
        np.testing.assert_array_equal(np.bincount(full_labels), [6000] * 10)
        np.testing.assert_array_equal(np.bincount(dataset.y_test), [1000] * 10)
        assert dataset.x_train.min() >= 0.0 and dataset.x_train.max() == 1.0
    assert not np.array_equal(last.y_val, first.y_val)
    assert not np.array_equal(last.x_val, first.x_val)
    np.testing.assert_array_equal(last.x_train[5_000:], first.x_train[:50_000])  # the 50k in both
    np.testing.assert_array_equal(last.x_test, first.x_test)

    standardized = FashionMNIST(root=str(system), download=False, scaling="standardize").load()
    np.testing.assert_allclose(standardized.x_train.mean(axis=0, dtype=np.float64), 0, atol=1e-5)
    np.testing.assert_allclose(standardized.x_train.std(axis=0, dtype=np.float64), 1, atol=1e-4)
    assert np.isfinite(standardized.x_test).all()
