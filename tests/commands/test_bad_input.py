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
    (("data=mnist",), "data=mnist: no such option; valid: cifar10, fashion_mnist, synthetic"),
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
    # output folders
    (("hydra.run.dir={file}/run",), "cannot create the output folder: [Errno 20] Not a directory"),
    (("hydra.run.dir={finished}",), "already holds a run or sweep (summary.json)"),
    (("-m", "trainer.seed=range(0)"), "the sweep expands to zero jobs"),
    # resume
    (("trainer.resume={root}/nowhere",), "is not a deeprun run folder (no .hydra/config.yaml)"),
    (("trainer.resume={finished}",), "has finished (status: completed); nothing to resume"),
]


def _fill(arg: str, folders: dict[str, Path]) -> str:
    for name, path in folders.items():
        arg = arg.replace(f"{{{name}}}", str(path))
    return arg


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("args", "fragment"), CASES, ids=[" ".join(args) for args, _ in CASES])
def test_bad_input_exits_2_with_one_line(args, fragment, folders, tmp_path):
    before = _snapshot(folders["finished"])
    synthetic = () if any(a.startswith("data=") for a in args) else ("data=synthetic",)
    result = invoke(deeprun_main, *(_fill(a, folders) for a in args), *synthetic, cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("deeprun: error:")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert not [line for line in result.stderr.splitlines() if "Traceback" in line]
    assert not list(tmp_path.glob("outputs/*/*/*")), "a run folder was left behind"
    assert _snapshot(folders["finished"]) == before, "an existing run's folder was changed"


def test_at_least_25_cases():
    assert len(CASES) >= 25


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
