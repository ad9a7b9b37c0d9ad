"""Bad input, as a table: each case exits 2 with one ``deeprun: error:`` line holding the expected
fragment, and leaves nothing behind (no run or sweep folder, no change to a folder it names). The table runs
the command in this process (:func:`helpers.commands.invoke`); one case also runs as a real process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deeprun.commands.run import main as deeprun_main
from deeprun.data.fashion_mnist import FASHION_MNIST_SPLITS
from helpers.commands import deeprun, invoke
from helpers.datasets import write_idx

SYNTHETIC = ("data=synthetic", "model.hidden=[16]", "trainer.epochs=1", "trainer.plots=false")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A finished run (with checkpoint), an empty folder, a file, and three broken Fashion-MNIST copies."""
    root = tmp_path_factory.mktemp("bad_input")
    finished = root / "finished"
    assert deeprun(*SYNTHETIC, f"hydra.run.dir={finished}", cwd=root).returncode == 0
    (root / "empty").mkdir()
    (root / "a_file").write_text("not a folder")
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (40, 4, 4)).astype(np.uint8), rng.integers(0, 3, 40)
    np.savez(root / "no_test_labels.npz", x_train=images, y_train=labels, x_test=images)
    np.savez(root / "nan.npz", x_train=np.full((40, 3), np.nan), y_train=labels, x_test=images[:, 0], y_test=labels)
    sweep = root / "sweep"  # a sweep folder as Hydra leaves it (its jobs do not matter here)
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - trainer.seed=1,2\n")
    images = np.zeros((3, 28, 28), np.uint8)
    for name, corrupt in (("truncated", "truncate"), ("corrupt_gz", "garbage")):
        folder = root / name
        for split in FASHION_MNIST_SPLITS:
            write_idx(folder / split.images_file, images)
            write_idx(folder / split.labels_file, np.zeros(3, np.uint8))
        broken = folder / FASHION_MNIST_SPLITS[0].images_file
        if corrupt == "truncate":
            broken.write_bytes(broken.read_bytes()[:-100])
        else:
            broken.write_bytes(b"\x1f\x8b this is not a gzip stream")
    return {
        "root": root,
        "finished": finished,
        "empty": root / "empty",
        "file": root / "a_file",
        "truncated": root / "truncated",
        "corrupt_gz": root / "corrupt_gz",
        "sweep": sweep,
    }


# (arguments, expected fragment of the error line); {name} is one of the ``folders``.
CASES = [
    # unknown options, in each group: the valid ones are listed
    (("optimizer=foo",), "optimizer=foo: no such option; valid: adagrad, adam, adamax, adamw, momentum, nadam"),
    (("schedule=warmup",), "schedule=warmup: no such option; valid: 1cycle, constant, exponential"),
    (("activation=relu6",), "activation=relu6: no such option; valid: elu, gelu, leaky_relu"),
    (("initializer=orthogonal",), "initializer=orthogonal: no such option; valid: glorot_normal, glorot_uniform"),
    (("normalization=layernorm",), "normalization=layernorm: no such option; valid: batchnorm, batchnorm_before"),
    (("regularizer=l3",), "regularizer=l3: no such option; valid: alpha_dropout, dropout, l1"),
    (("data=mnist",), "data=mnist: no such option; valid: arrays, cifar10, fashion_mnist, synthetic"),
    (("model=cnn",), "model=cnn: no such option; valid: deep_mlp, mlp"),
    (("preset=ed4_default",), "preset=ed4_default: no such option; valid: ed1_default"),
    (("experiment=ch12",), "experiment=ch12: no such option; valid: ch11_1cycle"),
    # unknown fields and malformed overrides
    (("trainer.nonexist=3",), "trainer.nonexist: no such field; valid: batch_size, checkpoint"),
    (("optimizer.beta=3",), "optimizer.beta: no such field; valid: clip_global_norm"),
    (("+trainer.foo=1",), "trainer: unknown field 'foo'; valid fields: batch_size"),
    (("trainer.epochs=[",), "no viable alternative at input '['"),
    # wrong types
    (("trainer.epochs=ten",), "trainer.epochs must be an integer (got 'ten')"),
    (("trainer.shuffle=maybe",), "trainer.shuffle must be true or false (got 'maybe')"),
    (("optimizer.learning_rate=fast",), "optimizer.momentum.learning_rate must be a number (got 'fast')"),
    # out-of-range values
    (("trainer.epochs=0",), "trainer.epochs must be > 0 (got 0)"),
    (("trainer.batch_size=-32",), "trainer.batch_size must be > 0 (got -32)"),
    (("optimizer.learning_rate=-1",), "optimizer.learning_rate must be > 0 (got -1.0)"),
    (("optimizer=adam", "optimizer.beta_1=1.5"), "optimizer.beta_1"),
    (("regularizer=dropout", "regularizer.dropout.rate=1.5"), "regularizer.dropout.rate"),
    (("trainer.early_stopping.monitor=val/f1",), "trainer.early_stopping.monitor must be one of"),
    (("trainer.devices=4",), "trainer.devices: 4 requested, but 1 cpu device(s) are visible"),
    # conflicting settings
    (
        ("optimizer=adamw", "optimizer.weight_decay=0.01", "regularizer=l2"),
        "regularizer: l2 together with adamw's weight_decay penalizes the weights twice",
    ),
    (("regularizer=[dropout,alpha_dropout]",), "regularizer: alpha_dropout and dropout conflict"),
    (
        ("optimizer=adagrad", "schedule=1cycle", "schedule.cycle_momentum=true"),
        "schedule.cycle_momentum needs an optimizer with momentum",
    ),
    (
        ("trainer.phases=[{epochs: 1, freeze: reused}]", "trainer.epochs=1"),
        "trainer.phases.freeze reused needs model.init_from",
    ),
    # model.init_from
    (("model.init_from={root}/nowhere",), "model.init_from must be an existing run folder"),
    (("model.init_from={empty}",), "model.init_from has no checkpoint/"),
    (("model.init_from={finished}", "model.hidden=[32]"), "model.init_from: blocks/0/dense/"),
    # the dataset
    (
        ("data=fashion_mnist", "data.root={empty}", "data.download=false"),
        "has no train-images-idx3-ubyte.gz (looked in",
    ),
    (("data=fashion_mnist", "data.root={truncated}", "data.download=false", "data.cache=false"), "truncated"),
    (
        ("data=fashion_mnist", "data.root={corrupt_gz}", "data.download=false", "data.cache=false"),
        "is corrupt or unreadable",
    ),
    # your own arrays
    (("data=arrays",), "data.path must name an .npz file or a folder of .npy files"),
    (("data=arrays", "data.path={root}/nowhere.npz"), "nowhere.npz does not exist"),
    (("data=arrays", "data.path={file}"), "is not a readable .npz file"),
    (("data=arrays", "data.path={root}/no_test_labels.npz"), "has no y_test (it holds: x_test, x_train, y_train)"),
    (("data=arrays", "data.path={root}/nan.npz"), "x_train holds NaN or infinite values"),
    # output folders
    (("hydra.run.dir={file}/run",), "cannot create the output folder: [Errno 20] Not a directory"),
    (("hydra.run.dir={finished}",), "already holds a run or sweep (summary.json)"),
    (("-m", "trainer.seed=range(0)"), "the sweep expands to zero jobs"),
    # resume
    (("trainer.resume={root}/nowhere",), "is not a deeprun run folder (no .hydra/config.yaml)"),
    (("trainer.resume={finished}",), "has finished (status: completed); nothing to resume"),
    (("trainer.resume={sweep}",), "is not a deeprun run folder (no .hydra/config.yaml)"),
    # non-finite numbers, in every group (checked once, by the registry)
    (("optimizer.learning_rate=inf",), "optimizer.momentum.learning_rate must be a finite number (got inf)"),
    (("optimizer=adam", "optimizer.epsilon=nan"), "optimizer.adam.epsilon must be a finite number (got nan)"),
    (("regularizer=l2", "regularizer.l2.factor=inf"), "regularizer.l2.factor must be a finite number"),
    (("activation=elu", "activation.alpha=nan"), "activation.elu.alpha must be a finite number"),
    (("activation=leaky_relu", "activation.alpha=-inf"), "activation.leaky_relu.alpha must be a finite number"),
    (("initializer=variance_scaling", "initializer.scale=inf"), "initializer.variance_scaling.scale must be a finite"),
    (("schedule=exponential", "schedule.decay_rate=nan"), "schedule.exponential.decay_rate must be a finite number"),
    (("schedule.max_lr=inf",), "schedule.1cycle.max_lr must be a finite number"),
    (("trainer.early_stopping.min_delta=inf",), "trainer.early_stopping.min_delta must be a finite number"),
    (("data.noise=nan",), "data.synthetic.noise must be a finite number"),
    # sizes the program cannot represent or the machine cannot hold, refused before compiling
    (("trainer.epochs=3000000000",), "trainer.epochs must fit in 32 bits"),
    (("trainer.batch_size=99999999999",), "trainer.batch_size must fit in 32 bits"),
    (("model.hidden=[3000000000]",), "model.mlp.hidden[0] must fit in 32 bits"),
    (("trainer.seed=-3000000000",), "trainer.seed must fit in 32 bits"),
    (("model.hidden=[1000000000]",), "GiB are available"),
    (("model=deep_mlp", "model.depth=100000", "model.width=10000"), "GiB are available"),
    (("data.image_size=100000",), "GiB are available"),
    (("trainer.epochs=100000000", "trainer.batch_size=1"), "steps overflows the 32-bit step counter"),
    # settings that leave an epoch empty or a schedule upside down
    (("trainer.batch_size=100000", "trainer.drop_remainder=true"), "an epoch would have no step"),
    (
        ("trainer.batch_size=100000", "trainer.drop_remainder=true", "schedule=constant"),
        "is larger than the training set (512 examples)",
    ),
    (("schedule.start_lr=1", "schedule.max_lr=0.1"), "schedule.start_lr must be <= max_lr"),
    (("schedule.last_lr=1", "schedule.max_lr=0.1"), "schedule.last_lr must be <= max_lr"),
    (("schedule.cycle_momentum=true", "schedule.min_momentum=0.99"), "schedule.min_momentum must be <= max_momentum"),
    # transfer: the actual mismatch is named
    (
        ("model.init_from={finished}", "model.hidden=[16]", "normalization=batchnorm"),
        "layer blocks/0 differs: the source run's holds",
    ),
    (("model.init_from={finished}", "model.hidden=[16]", "activation=prelu"), "layer blocks/0 differs"),
    (("model.init_from={finished}", "model.hidden=[16,16]"), "the source run has 1 hidden layers, this model 2"),
    (
        ("model.init_from={finished}", "model.hidden=[16,16]", "model.reuse_layers=2"),
        "model.reuse_layers must be <= 1: the source run has 1 hidden layers",
    ),
    # overrides Hydra cannot merge, said in words
    (("trainer.phases={epochs: 1}",), "trainer.phases is a list, the override gives a mapping"),
    # output folders that are not a new run's
    (("hydra.run.dir=",), "hydra.run.dir is empty (an unset shell variable?)"),
    (("name=../escape",), "name must be a folder name"),
    (("name=a/b",), "name must be a folder name"),
    (("hydra.run.dir={finished}/inside",), "lies inside"),
    (("hydra.run.dir={sweep}",), "already holds a run or sweep (multirun.yaml)"),
    (("-m", "hydra.sweep.dir={finished}", "trainer.seed=1,2"), "is a run folder; a sweep never writes into a run's"),
    (("-m", "hydra.sweep.dir={sweep}", "trainer.seed=3,4"), "holds a sweep of other overrides (trainer.seed=1,2)"),
    (("-m", "hydra.sweep.dir=", "trainer.seed=1,2"), "hydra.sweep.dir is empty"),
    (("-m", "optimizer=foo,adam"), "optimizer=foo: no such option"),
    (("-m", "name=..", "trainer.seed=1,2"), "name must be a folder name"),
]


def _fill(arg: str, folders: dict[str, Path]) -> str:
    for name, path in folders.items():
        arg = arg.replace(f"{{{name}}}", str(path))
    return arg


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) below ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(("args", "fragment"), CASES, ids=[" ".join(args) for args, _ in CASES])
def test_bad_input_exits_2_with_one_line(args, fragment, folders, tmp_path):
    before = _snapshot(folders["root"])
    synthetic = () if any(a.startswith("data=") for a in args) else ("data=synthetic",)
    result = invoke(deeprun_main, *(_fill(a, folders) for a in args), *synthetic, cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("deeprun: error:")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert not [line for line in result.stderr.splitlines() if "Traceback" in line]
    assert list(tmp_path.iterdir()) == [], "a folder was left behind"
    assert _snapshot(folders["root"]) == before, "an existing folder was changed"


def test_at_least_75_cases():
    assert len(CASES) >= 75


def test_one_case_in_a_new_process_too(folders, tmp_path):
    """The in-process table above, checked once end to end: a real process, its real stderr."""
    result = deeprun("optimizer=foo", "data=synthetic", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "deeprun: error: optimizer=foo: no such option; valid: adagrad, adam, adamax, adamw, momentum, nadam, "
        "nesterov, rmsprop, sgd"
    ]
    assert not (tmp_path / "outputs").exists()


def test_alpha_dropout_with_batch_norm_is_allowed_but_warned(tmp_path):
    result = invoke(
        deeprun_main,
        *SYNTHETIC,
        "regularizer=alpha_dropout",
        "normalization=batchnorm",
        "trainer.checkpoint=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "deeprun: warning: alpha dropout with batch norm" in result.stderr
