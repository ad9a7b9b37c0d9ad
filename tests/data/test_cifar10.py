"""Tests of the ``cifar10`` dataset: binary decoding, split, scaling, lookup, download and decoded cache.

They run on small generated batches in the official binary format (6 files of ``RECORDS`` records): the
expected record count per file is a module constant that the fixture shrinks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tarfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeprun.data import cifar10
from deeprun.data.base import DATASETS, DataError, pixel_scaling
from deeprun.data.cifar10 import (
    CIFAR10,
    CIFAR10_CLASS_NAMES,
    CIFAR10_TEST_FILES,
    CIFAR10_TRAIN_FILES,
    CIFAR10_URL,
    cifar10_cache_dir,
    decode_cifar10_files,
    locate_cifar10,
)
from deeprun.registry import ConfigError

RECORDS = 20  # per batch file: 100 full-train and 20 test images
N_FULL, N_TEST, VAL_SIZE = 5 * RECORDS, RECORDS, 30
FILES = [*CIFAR10_TRAIN_FILES, *CIFAR10_TEST_FILES]


def encode_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The binary format, written the plain way: per record the label byte, then the red, green and blue
    32×32 planes, each row by row, from HWC images."""
    return b"".join(
        bytes([int(label)]) + b"".join(image[:, :, channel].tobytes() for channel in range(3))
        for image, label in zip(images, labels)
    )


@dataclasses.dataclass(frozen=True)
class FakeCifar:
    """Generated uint8 HWC images and labels: the 50k-style training set and the test set."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]

    def batches(self) -> dict[str, bytes]:
        """Each .bin file's content: the training set cut into five files of RECORDS, then the test file."""
        (images, labels), content = self.train, {}
        for i, name in enumerate(CIFAR10_TRAIN_FILES):
            part = slice(i * RECORDS, (i + 1) * RECORDS)
            content[name] = encode_records(images[part], labels[part])
        content["test_batch.bin"] = encode_records(*self.test)
        return content

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in self.batches().items():
            (directory / name).write_bytes(content)
        return directory

    def archive(self, path: Path, extra: dict[str, bytes] | None = None, drop: str | None = None) -> str:
        """Write a cifar-10-binary.tar.gz look-alike, plus ``extra`` members and without the batch file
        ``drop``; return its MD5."""
        batches = {name: content for name, content in self.batches().items() if name != drop}
        members = {f"cifar-10-batches-bin/{name}": content for name, content in batches.items()}
        members["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(CIFAR10_CLASS_NAMES).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w:gz") as tar:
            for name, content in {**members, **(extra or {})}.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Move every lookup location into tmp_path and shrink the expected batch size to RECORDS."""
    monkeypatch.setenv("DEEPRUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEPRUN_DATA", raising=False)
    monkeypatch.delenv("DEEPRUN_CIFAR10_URL", raising=False)
    monkeypatch.setattr(cifar10, "CIFAR10_BATCH_RECORDS", RECORDS)
    return tmp_path


@pytest.fixture
def fake(isolated: Path) -> FakeCifar:
    rng = np.random.default_rng(0)

    def make(count: int) -> tuple[np.ndarray, np.ndarray]:
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        return images, (np.arange(count) % 10).astype(np.uint8)

    return FakeCifar(train=make(N_FULL), test=make(N_TEST))


def cifar(**fields) -> CIFAR10:
    return CIFAR10(**{"val_size": VAL_SIZE, "download": False, **fields})


def decoded_cache_files() -> list[Path]:
    return sorted(cifar10_cache_dir().glob("decoded-*.npy"))


# --- decoding -------------------------------------------------------------------------------------


def test_record_planes_become_hwc_images(tmp_path: Path) -> None:
    """Byte 1 + c·1024 + r·32 + w of a record is channel c (R, G, B) of the pixel at row r, column w."""
    channel, row, column = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    record = bytes([7]) + ((channel * 100 + row * 3 + column) % 256).astype(np.uint8).tobytes()
    path = tmp_path / "batch.bin"
    path.write_bytes(record + bytes([2]) + bytes(range(256)) * 12)
    images, labels = cifar10.read_cifar10_batch(path, records=2)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8 and images.flags.c_contiguous
    np.testing.assert_array_equal(labels, [7, 2])
    for r, w, c in ((0, 0, 0), (0, 1, 0), (1, 0, 0), (5, 9, 1), (31, 31, 2)):
        assert images[0, r, w, c] == (c * 100 + r * 3 + w) % 256
    np.testing.assert_array_equal(images[1, 0, :, 0], range(32))  # red plane, first row
    np.testing.assert_array_equal(images[1, 0, :, 1], (np.arange(32) + 1024) % 256)  # green plane


def test_round_trip_of_generated_batches(fake: FakeCifar, isolated: Path) -> None:
    directory = fake.write(isolated / "bins")
    paths = [directory / name for name in CIFAR10_TRAIN_FILES]
    images, labels = decode_cifar10_files(paths, RECORDS)
    np.testing.assert_array_equal(images, fake.train[0])
    np.testing.assert_array_equal(labels, fake.train[1])


@pytest.mark.parametrize(("cut", "state"), [(-1, "truncated"), (3073, "corrupt")])
def test_wrong_file_size_is_an_error_naming_the_file(fake: FakeCifar, cut: int, state: str) -> None:
    directory = fake.write(cifar10_cache_dir())
    path = directory / "data_batch_3.bin"
    content = path.read_bytes()
    path.write_bytes(content[:cut] if cut < 0 else content + content[:cut])
    with pytest.raises(DataError, match=state) as err:
        cifar().load()
    assert str(path) in str(err.value) and str(RECORDS * 3073) in str(err.value)


def test_label_out_of_range_is_an_error(fake: FakeCifar) -> None:
    directory = fake.write(cifar10_cache_dir())
    path = directory / "test_batch.bin"
    content = bytearray(path.read_bytes())
    content[3073] = 10  # the second record's label
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match="test_batch.bin has label 10"):
        cifar().load()


# --- split and scaling ----------------------------------------------------------------------------


def test_split_keeps_the_first_val_size_images_for_validation(fake: FakeCifar) -> None:
    fake.write(cifar10_cache_dir())
    dataset = cifar().load()
    images, labels = fake.train
    np.testing.assert_array_equal(dataset.y_val, labels[:VAL_SIZE])
    np.testing.assert_array_equal(dataset.y_train, labels[VAL_SIZE:])
    np.testing.assert_array_equal(dataset.y_test, fake.test[1])
    # Flattened HWC, like Keras's Flatten of (32, 32, 3).
    np.testing.assert_array_equal(dataset.pixels_val, images[:VAL_SIZE].reshape(VAL_SIZE, -1))
    np.testing.assert_array_equal(dataset.pixels_train[0, :6], images[VAL_SIZE, 0, :2].reshape(-1))
    assert dataset.input_shape == (32, 32, 3) and dataset.n_features == 3072 and dataset.n_classes == 10
    assert dataset.class_names[0] == "airplane" and dataset.class_names[9] == "truck"
    assert dataset.name == "cifar10"
    assert {dataset.y_train.dtype, dataset.y_val.dtype, dataset.y_test.dtype} == {np.dtype(np.int32)}
    assert len(cifar(train_limit=7).load().y_train) == 7


def test_raw_unit_and_standardize_scaling(fake: FakeCifar) -> None:
    fake.write(cifar10_cache_dir())
    raw, unit, standardized = (cifar(scaling=s).load() for s in ("raw", "unit", "standardize"))
    assert {field.name: field.default for field in dataclasses.fields(CIFAR10)}["scaling"] == "raw"
    for split in ("train", "val", "test"):
        pixels = getattr(raw, f"pixels_{split}")
        x_raw, x_unit = getattr(raw, f"x_{split}"), getattr(unit, f"x_{split}")
        assert x_raw.dtype == x_unit.dtype == np.float32
        np.testing.assert_array_equal(x_raw, pixels.astype(np.float32))  # no /255
        np.testing.assert_array_equal(x_unit, pixels / np.float32(255))
    assert raw.x_train.max() == 255
    pixels = raw.pixels_train.astype(np.float64)
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    np.testing.assert_allclose(standardized.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(standardized.x_val, (raw.pixels_val - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(standardized.x_test, (raw.pixels_test - mean) / std, rtol=1e-5, atol=1e-5)


def test_raw_scaling_works_inside_jit_and_vmap() -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(4, 64)
    scaling = pixel_scaling(pixels, "raw")
    scaled = jax.jit(lambda s, p: s.apply(p))(scaling, jnp.asarray(pixels))
    np.testing.assert_array_equal(np.asarray(scaled), pixels.astype(np.float32))
    batched = jax.vmap(lambda p: scaling.apply(p))(jnp.asarray(pixels))
    np.testing.assert_array_equal(np.asarray(batched), pixels.astype(np.float32))
    leaves, treedef = jax.tree_util.tree_flatten(scaling)
    assert leaves == [] and jax.tree_util.tree_unflatten(treedef, leaves).divisor == 1.0


# --- lookup ---------------------------------------------------------------------------------------


def touch_files(directory: Path) -> Path:
    """Create empty files under the six names: lookup only checks that they exist."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (directory / name).touch()
    return directory


def located_dir(root: str | None = None) -> Path:
    paths = set(locate_cifar10(root, download=False).values())
    assert len({path.parent for path in paths}) == 1, "all six files must come from one directory"
    return paths.pop().parent


def test_lookup_order_root_env_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = touch_files(isolated / "root")
    env = touch_files(isolated / "env")
    cache = touch_files(cifar10_cache_dir() / "cifar-10-batches-bin")
    monkeypatch.setenv("DEEPRUN_DATA", str(env))
    assert located_dir(str(root)) == root
    assert located_dir() == env
    monkeypatch.setenv("DEEPRUN_DATA", str(isolated / "elsewhere"))
    assert located_dir() == cache


@pytest.mark.parametrize("layout", ["cifar-10-batches-bin", "cifar-10", "cifar-10/cifar-10-batches-bin"])
def test_lookup_env_subfolders(isolated: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    nested = touch_files(isolated / "datasets" / layout)
    touch_files(cifar10_cache_dir())
    monkeypatch.setenv("DEEPRUN_DATA", str(isolated / "datasets"))
    assert located_dir() == nested


def test_root_may_be_the_extracted_folders_parent(isolated: Path) -> None:
    nested = touch_files(isolated / "root" / "cifar-10-batches-bin")
    assert located_dir(str(isolated / "root")) == nested


def test_root_without_the_files_is_an_error_not_a_fallback(isolated: Path) -> None:
    touch_files(cifar10_cache_dir())
    root = touch_files(isolated / "root" / "cifar-10-batches-bin")
    (root / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match="has no data_batch_4.bin") as err:
        cifar(root=str(root.parent), download=True).load()
    assert f"data.root={root.parent}" in str(err.value)
    with pytest.raises(DataError, match="is not a directory"):
        cifar(root=str(isolated / "typo")).load()


def test_missing_everywhere_without_download_says_how_to_get_the_data(isolated: Path) -> None:
    with pytest.raises(DataError) as err:
        cifar().load()
    message = str(err.value)
    assert isinstance(err.value, ConfigError) and "\n" not in message
    for way in (
        "data.root=",
        "DEEPRUN_DATA=",
        str(cifar10_cache_dir()),
        "data.download=true",
        CIFAR10_URL,
        "data_batch_1.bin",
        "test_batch.bin",
        "CIFAR-10 not found",
    ):
        assert way in message


# --- download -------------------------------------------------------------------------------------


def test_download_over_http_with_md5_check(
    fake: FakeCifar, http_server: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = http_server
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", fake.archive(served / "c10.tar.gz"))
    monkeypatch.setenv("DEEPRUN_CIFAR10_URL", f"{url}/c10.tar.gz")
    dataset = cifar(download=True).load()
    np.testing.assert_array_equal(dataset.y_test, fake.test[1])
    np.testing.assert_array_equal(dataset.pixels_val, fake.train[0][:VAL_SIZE].reshape(VAL_SIZE, -1))
    extracted = cifar10_cache_dir() / "cifar-10-batches-bin"
    assert sorted(p.name for p in extracted.iterdir()) == sorted(FILES)
    assert (cifar10_cache_dir() / "cifar-10-binary.tar.gz").is_file()
    assert located_dir() == extracted  # found without downloading from now on


def test_extraction_takes_only_the_expected_members(
    fake: FakeCifar, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = {
        "../escape.bin": b"x",
        "cifar-10-batches-bin/../../escape.bin": b"x",
        f"{isolated}/escape.bin": b"x",
        "cifar-10-batches-bin/other.bin": b"x",
    }
    archive = isolated / "served" / "c10.tar.gz"
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", fake.archive(archive, extra=hostile))
    monkeypatch.setenv("DEEPRUN_CIFAR10_URL", archive.as_uri())
    cifar(download=True).load()
    written = {p.name for p in isolated.rglob("*") if p.is_file()}
    assert "escape.bin" not in written and "other.bin" not in written
    extracted = cifar10_cache_dir() / "cifar-10-batches-bin"
    assert sorted(p.name for p in extracted.iterdir()) == sorted(FILES)


def test_download_with_bad_md5_is_rejected_and_leaves_nothing(
    fake: FakeCifar, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = isolated / "served" / "c10.tar.gz"
    fake.archive(archive)
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", "0" * 32)
    monkeypatch.setenv("DEEPRUN_CIFAR10_URL", archive.as_uri())
    expected = f"the download {archive.as_uri()} has MD5 [0-9a-f]{{32}}, expected"
    with pytest.raises(DataError, match=expected):
        cifar(download=True).load()
    assert list(cifar10_cache_dir().iterdir()) == []  # no archive, no partial or temp file


def test_a_cached_archive_is_checked_and_extracted_without_downloading(
    fake: FakeCifar, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = cifar10_cache_dir() / "cifar-10-binary.tar.gz"
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", fake.archive(archive))
    monkeypatch.setenv("DEEPRUN_CIFAR10_URL", (isolated / "nowhere").as_uri())
    np.testing.assert_array_equal(cifar(download=True).load().y_test, fake.test[1])
    for path in (cifar10_cache_dir() / "cifar-10-batches-bin").iterdir():
        path.unlink()
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", "0" * 32)
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz has MD5"):
        cifar(download=True).load()


def test_archive_missing_a_member_is_an_error(fake: FakeCifar, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = isolated / "served" / "c10.tar.gz"
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", fake.archive(archive, drop="data_batch_2.bin"))
    monkeypatch.setenv("DEEPRUN_CIFAR10_URL", archive.as_uri())
    with pytest.raises(DataError, match="has no cifar-10-batches-bin/data_batch_2.bin"):
        cifar(download=True).load()


def test_corrupt_archive_is_an_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = isolated / "served" / "c10.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(b"\x1f\x8b not really gzip")
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setenv("DEEPRUN_CIFAR10_URL", archive.as_uri())
    with pytest.raises(DataError, match="corrupt or unreadable"):
        cifar(download=True).load()


def test_download_failure_says_how_to_get_the_data(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPRUN_CIFAR10_URL", (isolated / "nowhere.tar.gz").as_uri())
    with pytest.raises(DataError, match="could not download .*nowhere.tar.gz") as err:
        cifar(download=True).load()
    assert "DEEPRUN_DATA=" in str(err.value)


# --- decoded cache --------------------------------------------------------------------------------


def no_decoding(*args: object) -> None:
    raise AssertionError("the batch decoder ran although the decoded cache exists")


def test_decoded_cache_is_written_once_and_reused(fake: FakeCifar, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.write(cifar10_cache_dir())
    first = cifar().load()
    cached = decoded_cache_files()
    assert len(cached) == 4  # images and labels of train and test
    written = {path: path.stat().st_mtime_ns for path in cached}
    monkeypatch.setattr(cifar10, "read_cifar10_batch", no_decoding)
    second = cifar().load()
    np.testing.assert_array_equal(second.pixels_train, first.pixels_train)
    np.testing.assert_array_equal(second.y_test, first.y_test)
    assert {path: path.stat().st_mtime_ns for path in decoded_cache_files()} == written


def test_cache_false_neither_reads_nor_writes_the_decoded_cache(
    fake: FakeCifar, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.write(cifar10_cache_dir())
    cifar(cache=False).load()
    assert decoded_cache_files() == []
    cifar().load()
    calls = []
    real = cifar10.read_cifar10_batch
    monkeypatch.setattr(cifar10, "read_cifar10_batch", lambda *args: calls.append(args) or real(*args))
    cifar(cache=False).load()
    assert len(calls) == 6


def test_changed_batch_files_are_decoded_again(fake: FakeCifar) -> None:
    directory = fake.write(cifar10_cache_dir())
    cifar().load()
    labels = fake.test[1].copy()
    labels[0] = 9
    (directory / "test_batch.bin").write_bytes(encode_records(fake.test[0], labels))
    os.utime(directory / "test_batch.bin", ns=(1, 1))  # a different modification time, however fast the disk
    assert cifar().load().y_test[0] == 9


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"val_size": 0}, "data.val_size"),
        ({"val_size": 50_000}, "data.val_size"),
        ({"scaling": "minmax"}, "scaling"),
        ({"root": ""}, "data.root"),
        ({"train_limit": 0}, "data.train_limit"),
        ({"validation": "last"}, "validation"),  # CIFAR-10's validation set is always the first images
        ({"download": "yes"}, "download"),
    ],
)
def test_bad_config_is_rejected(config: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DATASETS.build({"name": "cifar10", **config})


def test_val_size_must_leave_a_train_split(fake: FakeCifar) -> None:
    fake.write(cifar10_cache_dir())
    with pytest.raises(ConfigError, match="data.val_size"):
        cifar(val_size=N_FULL).load()


def test_hydra_config_group_composes() -> None:
    from deeprun.settings import settings_from_config
    from helpers.configs import compose_dict

    settings = settings_from_config(compose_dict(["data=cifar10", "data.scaling=standardize"]))
    assert settings.data == CIFAR10(scaling="standardize")
