"""The cost of progress within the epoch (``trainer.step_progress`` on a terminal): deeprun's epoch
program with its host callback (a report every 1/5 epoch) against the same program without, in one
process, on the batch-32 Fashion-MNIST epoch (the book's default run).

Both programs are compiled first; then epochs alternate between them (``--epochs`` each, in pairs, so
the machine's drift falls on both alike). Prints one JSON line: each program's median epoch time and
``overhead`` = with / without − 1.

    python benchmarks/step_progress.py --epochs 6   # bench.py runs it in a process of its own
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    import jax
    import jax.numpy as jnp
    from hydra import compose, initialize_config_dir

    from deeprun.registry import plain_mapping
    from deeprun.runs.environment import pin_cpu_threads
    from deeprun.settings import CONFIG_DIR, settings_from_config
    from deeprun.training.state import DeviceData
    from deeprun.training.trainer import Trainer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each program")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    pin_cpu_threads()  # as the commands do
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        config = plain_mapping(compose("config", overrides=[f"trainer.batch_size={args.batch_size}"]))
    settings = settings_from_config(config)
    data = settings.data.load()
    device_data = jax.device_put(DeviceData.of(data))
    reported = []
    programs = {}
    for label, steps_done in (("without", None), ("with", reported.append)):
        trainer = Trainer(settings, len(data.y_train), data.n_features, data.n_classes, steps_done=steps_done)
        state, member = trainer.init(settings)
        compiled = trainer.epoch_fn.lower(state, member, device_data, jnp.int32(0), None).compile()
        programs[label] = (compiled, trainer, member)
    times: dict[str, list[float]] = {label: [] for label in programs}
    for epoch in range(args.epochs):
        for label, (compiled, trainer, member) in programs.items():
            state, _ = trainer.init(settings)
            start = time.perf_counter()
            state, metrics = compiled(state, member, device_data, jnp.int32(epoch), None)
            jax.block_until_ready(metrics)
            times[label].append(time.perf_counter() - start)
    medians = {label: statistics.median(values) for label, values in times.items()}
    print(
        json.dumps(
            {
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "steps_per_epoch": programs["with"][1].steps_per_epoch,
                "reports": len(reported) // args.epochs,
                "epoch_s": medians,
                "overhead": medians["with"] / medians["without"] - 1,
            }
        )
    )


if __name__ == "__main__":
    main()
