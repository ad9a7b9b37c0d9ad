"""Trace and compile time of deeprun's epoch program: the 2-layer MLP against the 100-layer SELU net.

Each model's epoch program (``Trainer.epoch_fn``) is lowered and compiled ahead of time with the
persistent compilation cache off, on 2,000 training examples (the example count sets only the scan's
length). Prints one JSON line: ``{"models": {label: {"trace_s", "compile_s", "total_s"}}, "ratio": …}``.

    python benchmarks/compile_time.py          # bench.py runs it in a process of its own
"""

from __future__ import annotations

import json
import time

DEEP = ("model=deep_mlp", "initializer=lecun_normal", "activation=selu", "data.scaling=standardize")
MODELS = {"mlp [300, 100]": (), "deep_mlp 100 x 100, SELU": DEEP}


def measure(overrides: tuple[str, ...]) -> dict[str, float]:
    import jax
    import jax.numpy as jnp
    from hydra import compose, initialize_config_dir

    from deeprun.registry import plain_mapping
    from deeprun.settings import CONFIG_DIR, settings_from_config
    from deeprun.training.state import DeviceData
    from deeprun.training.trainer import Trainer

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        config = plain_mapping(compose("config", overrides=["data.train_limit=2000", *overrides]))
    settings = settings_from_config(config)
    data = settings.data.load()
    trainer = Trainer(settings, len(data.y_train), data.n_features, data.n_classes)
    state, member = trainer.init(settings)
    device_data = jax.device_put(DeviceData.of(data))
    start = time.perf_counter()
    lowered = trainer.epoch_fn.lower(state, member, device_data, jnp.int32(0), None)
    traced = time.perf_counter() - start
    lowered.compile()
    total = time.perf_counter() - start
    return {"trace_s": traced, "compile_s": total - traced, "total_s": total}


def main() -> None:
    import jax

    from deeprun.runs.environment import pin_cpu_threads

    pin_cpu_threads()  # as the commands do
    jax.config.update("jax_enable_compilation_cache", False)
    models = {label: measure(overrides) for label, overrides in MODELS.items()}
    small, deep = (models[label]["total_s"] for label in MODELS)
    print(json.dumps({"models": models, "ratio": deep / small}))


if __name__ == "__main__":
    main()
