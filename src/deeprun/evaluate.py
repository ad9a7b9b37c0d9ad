"""``deeprun-eval RUN_DIR [mc_samples=100] [split=test] [seed=42]``: evaluate a finished run, with
Monte Carlo dropout (Gal & Ghahramani 2016) when ``mc_samples`` > 0.

MC dropout averages the class probabilities of ``mc_samples`` stochastic passes, each in Keras's
``training=True`` mode (dropout active, batch norm on batch statistics), over the whole split. It writes
``mc_dropout.json`` (accuracy before/after, the first example's probabilities) and ``mc_dropout.npz``
(per-example mean, std and predictive entropy) into the run folder, plus ``mc_dropout.png``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from deeprun.registry import ConfigError, from_mapping, require_non_negative

EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class EvalOptions:
    mc_samples: int = 100
    split: str = "test"
    seed: int = 42
    chunk: int = 2000

    def __post_init__(self) -> None:
        require_non_negative("mc_samples", self.mc_samples)
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"split must be one of train, val, test (got {self.split!r})")


def parse_options(tokens: list[str]) -> EvalOptions:
    """``key=value`` tokens (numbers as ints) into validated options."""
    values: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value, got {token!r}")
        values[key] = int(value) if value.lstrip("-").isdigit() else value
    return from_mapping(EvalOptions, values, "deeprun-eval")


def probabilities(graphdef, state, x: jax.Array, head: str, *, key: jax.Array | None = None, dropout=None,
                  chunk: int) -> jax.Array:
    """Class probabilities of ``x`` in chunks; stochastic (training mode) when ``key`` is given."""
    from flax import nnx

    from deeprun.models import predict_probabilities

    model = nnx.merge(graphdef, state, copy=True)  # fresh variables: BN may update them in training mode
    outputs = []
    for start in range(0, x.shape[0], chunk):
        xb = x[start:start + chunk]
        if key is None:
            logits = model(xb)
        else:
            logits = model(xb, train=True, key=jax.random.fold_in(key, start), dropout=dropout)
        outputs.append(predict_probabilities(logits, head))
    return jnp.concatenate(outputs)


def mc_dropout(run_dir: Path, options: EvalOptions) -> dict[str, Any]:
    """Evaluate ``run_dir`` plainly and with MC dropout; write the files; return the report."""
    from deeprun.runs import load_run, write_json_atomic

    run = load_run(run_dir)
    dataset = run.settings.data.load()
    x = jnp.asarray(getattr(dataset, f"x_{options.split}"))
    y = np.asarray(getattr(dataset, f"y_{options.split}"))
    from flax import nnx

    graphdef, state = nnx.split(run.model())
    head = run.settings.model.head
    plain = np.asarray(jax.jit(lambda x: probabilities(graphdef, state, x, head, chunk=options.chunk))(x))
    report: dict[str, Any] = {
        "split": options.split,
        "mc_samples": options.mc_samples,
        "accuracy": float(np.mean(plain.argmax(1) == y)),
        "first_example": {"label": int(y[0]), "probabilities": plain[0].round(4).tolist()},
    }
    if options.mc_samples:
        dropout = run.settings.regularization.dropout
        keys = jax.random.split(jax.random.key(options.seed), options.mc_samples)

        @jax.jit
        def sample(key):
            return probabilities(graphdef, state, x, head, key=key, dropout=dropout, chunk=options.chunk)

        samples = np.stack([np.asarray(sample(key)) for key in keys])
        mean, std = samples.mean(0), samples.std(0)
        entropy = -np.sum(mean * np.log(np.clip(mean, 1e-12, 1)), axis=1)
        report.update({
            "mc_accuracy": float(np.mean(mean.argmax(1) == y)),
            "has_dropout": dropout is not None,
        })
        report["first_example"].update({"mc_mean": mean[0].round(4).tolist(), "mc_std": std[0].round(4).tolist()})
        np.savez_compressed(run.path / "mc_dropout.npz", mean=mean, std=std, entropy=entropy, labels=y)
        from deeprun.figures import mc_dropout_figure

        mc_dropout_figure(mean[0], std[0], dataset.class_names, run.path / "mc_dropout.png",
                          title=f"MC dropout, first {options.split} example ({options.mc_samples} passes)")
    write_json_atomic(run.path / "mc_dropout.json", report)
    return report


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if args else EXIT_BAD_INPUT)
    try:
        report = mc_dropout(Path(args[0]), parse_options(args[1:]))
    except ConfigError as error:
        print(f"deeprun-eval: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    line = f"{report['split']} accuracy {report['accuracy']:.4f}"
    if "mc_accuracy" in report:
        line += f" -> {report['mc_accuracy']:.4f} with MC dropout ({report['mc_samples']} passes)"
    print(line)
    print(f"first example (label {report['first_example']['label']}): {report['first_example']}")


if __name__ == "__main__":
    main()
