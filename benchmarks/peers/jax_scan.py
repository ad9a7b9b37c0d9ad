"""Reference: the bare scanned loop, hand-written in JAX + optax with the whole epoch under ``jax.jit``.

The same 784-300-100-10 ELU MLP (He-normal hidden kernels, Glorot-uniform output, zero biases), SGD
momentum 0.9 at lr 0.01, softmax cross-entropy, the same float32 arrays; one compiled program per epoch:
``jax.random.permutation`` of the examples, ``lax.scan`` over the full batches (the last partial batch is
dropped), the parameters and optimizer state donated. No validation pass, no per-step outputs, no
schedules or injected hyperparameters: the floor deeprun's epoch is measured against. ``val_accuracy``
is computed once after training (outside the timed epochs). XLA's CPU threads: ``PJRT_NPROC``, as deeprun
sets it (1 unless set), so both run on the same thread count.
"""

from __future__ import annotations

import os

os.environ.setdefault("PJRT_NPROC", "1")  # before JAX starts its CPU client: deeprun's default

from _common import HIDDEN, LEARNING_RATE, MOMENTUM, N_CLASSES, SEED, Clock, emit, load_data, parse_args


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    data = load_data(args.data)

    import jax
    import jax.numpy as jnp
    import optax

    widths = (data.n_features, *HIDDEN, N_CLASSES)
    keys = jax.random.split(jax.random.key(SEED), len(widths) - 1)
    he, glorot = jax.nn.initializers.he_normal(), jax.nn.initializers.glorot_uniform()
    params = [
        {"w": (glorot if i == len(widths) - 2 else he)(key, (n_in, n_out)), "b": jnp.zeros(n_out)}
        for i, (key, n_in, n_out) in enumerate(zip(keys, widths[:-1], widths[1:], strict=True))
    ]
    tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
    opt_state = tx.init(params)
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    n_steps = len(data.y_train) // args.batch_size

    def logits_of(params, x):
        for layer in params[:-1]:
            x = jax.nn.elu(x @ layer["w"] + layer["b"])
        return x @ params[-1]["w"] + params[-1]["b"]

    def loss_of(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits_of(params, x), y).mean()

    def epoch(params, opt_state, key):
        order = jax.random.permutation(key, len(y_train))[: n_steps * args.batch_size]

        def step(carry, indices):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_of)(params, x_train[indices], y_train[indices])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order.reshape(n_steps, -1))
        return params, opt_state, losses.mean()

    compiled = jax.jit(epoch, donate_argnums=(0, 1))
    epoch_times, loss = [], None
    for index in range(args.epochs):
        clock = Clock()
        params, opt_state, loss = compiled(params, opt_state, jax.random.key(index))
        loss = float(loss)  # waits for the epoch
        epoch_times.append(clock.lap())
    predictions = jnp.argmax(logits_of(params, jnp.asarray(data.x_val)), axis=-1)
    emit(epoch_times, float(jnp.mean(predictions == jnp.asarray(data.y_val))), loss)


if __name__ == "__main__":
    main()
