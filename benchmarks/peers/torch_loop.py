"""Peer: a plain, idiomatic PyTorch training loop, on the GPU when CUDA is available, else on the CPU.

``nn.Sequential`` Linear(784, 300) → ELU → Linear(300, 100) → ELU → Linear(100, 10); hidden weights drawn like
Keras' he_normal (normal truncated at ±2σ, σ = sqrt(2/fan_in)/0.8796), output weights like Keras'
glorot_uniform (``xavier_uniform_``), biases 0. ``CrossEntropyLoss`` on the logits (= softmax + cross-entropy),
``torch.optim.SGD(lr=0.01, momentum=0.9)`` (its v ← μv + g, w ← w − ηv equals Keras' v ← μv − ηg,
w ← w + v at a constant rate). No DataLoader: the float32 arrays become tensors once, each epoch draws a
``randperm`` and slices batches by index (last partial batch kept, like Keras); ``model.eval()`` + ``no_grad``
validation at the end of each epoch, which the epoch time includes. ``torch.set_num_threads(os.cpu_count())``.
Data and model live on the device; the loss is summed there and read once per epoch (no per-step sync).
"""

from __future__ import annotations

import math
import os
import sys

from _common import (
    HIDDEN,
    LEARNING_RATE,
    MOMENTUM,
    N_CLASSES,
    SEED,
    TRUNCATED_NORMAL_STD_CORRECTION,
    Clock,
    emit,
    load_data,
    parse_args,
)

EVAL_BATCH_SIZE = 1000


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    data = load_data(args.data)

    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(SEED)

    def he_normal_(layer: nn.Linear) -> None:
        std = math.sqrt(2.0 / layer.in_features) / TRUNCATED_NORMAL_STD_CORRECTION
        nn.init.trunc_normal_(layer.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(layer.bias)

    sizes = (data.n_features, *HIDDEN)
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        linear = nn.Linear(fan_in, fan_out)
        he_normal_(linear)
        layers += [linear, nn.ELU()]
    head = nn.Linear(sizes[-1], N_CLASSES)
    nn.init.xavier_uniform_(head.weight)
    nn.init.zeros_(head.bias)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = nn.Sequential(*layers, head).to(device)

    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)

    x_train = torch.from_numpy(data.x_train).to(device)
    y_train = torch.from_numpy(data.y_train).long().to(device)
    x_val = torch.from_numpy(data.x_val).to(device)
    y_val = torch.from_numpy(data.y_val).long().to(device)
    n = len(x_train)

    epoch_times: list[float] = []
    train_loss = val_accuracy = float("nan")
    for _ in range(args.epochs):
        clock = Clock()
        model.train()
        permutation = torch.randperm(n, device=device)
        total_loss = torch.zeros((), device=device)
        for start in range(0, n, args.batch_size):
            index = permutation[start : start + args.batch_size]
            inputs, targets = x_train[index], y_train[index]
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            total_loss += loss.detach() * len(index)
        train_loss = total_loss.item() / n

        model.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(x_val), EVAL_BATCH_SIZE):
                logits = model(x_val[start : start + EVAL_BATCH_SIZE])
                correct += (logits.argmax(dim=1) == y_val[start : start + EVAL_BATCH_SIZE]).sum()
        val_accuracy = correct.item() / len(x_val)
        epoch_times.append(clock.lap())

    emit(
        epoch_times,
        val_accuracy=val_accuracy,
        train_loss=train_loss,
        num_threads=torch.get_num_threads(),
        device=str(device),
        jax_imported="jax" in sys.modules,  # should be False: JAX would add to this process's time and memory
    )


if __name__ == "__main__":
    main()
