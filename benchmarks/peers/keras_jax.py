"""Peer: Keras 3 on the JAX backend, ``model.fit`` as a Keras user would write it.

Sequential Flatten → Dense(300, elu, he_normal) → Dense(100, elu, he_normal) → Dense(10, softmax) (Keras'
default glorot_uniform), SGD(learning_rate=0.01, momentum=0.9), sparse categorical cross-entropy, accuracy,
``fit`` with ``validation_data`` and every other setting at its default (shuffle, jit_compile="auto" → XLA,
``steps_per_execution=1``) except ``verbose=0`` (no progress bar; ``--verbose 1`` restores it).
``--steps-per-execution 100`` runs 100 train steps per compiled call, the fastest setting Keras offers.

Epoch times come from a Callback (``on_epoch_begin`` → ``on_epoch_end``, validation included); the first
epoch includes the tracing and XLA compilation of the train and validation steps.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported

import time

from _common import HIDDEN, LEARNING_RATE, MOMENTUM, N_CLASSES, SEED, emit, load_data, parse_args


def main() -> None:
    def extra(parser):
        parser.add_argument("--steps-per-execution", type=int, default=1)
        parser.add_argument("--verbose", type=int, default=0)

    args = parse_args(__doc__.splitlines()[0], extra)
    data = load_data(args.data)

    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    keras.utils.set_random_seed(SEED)

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    model = keras.Sequential(
        [
            keras.Input(shape=data.input_shape),
            keras.layers.Flatten(),
            *(keras.layers.Dense(units, activation="elu", kernel_initializer="he_normal") for units in HIDDEN),
            keras.layers.Dense(N_CLASSES, activation="softmax"),
        ]
    )
    model.compile(
        loss="sparse_categorical_crossentropy",
        optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE, momentum=MOMENTUM),
        metrics=["accuracy"],
        steps_per_execution=args.steps_per_execution,
    )
    x_train = data.x_train.reshape(-1, *data.input_shape)
    x_val = data.x_val.reshape(-1, *data.input_shape)
    timer = EpochTimer()
    history = model.fit(
        x_train,
        data.y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_val, data.y_val),
        callbacks=[timer],
        verbose=args.verbose,
    )
    emit(
        timer.times,
        val_accuracy=history.history["val_accuracy"][-1],
        train_loss=history.history["loss"][-1],
        steps_per_execution=args.steps_per_execution,
    )


if __name__ == "__main__":
    main()
