"""The machine's float32 matrix-multiply throughput, as the reference the trainers are measured against.

Two kinds of product, each timed after a warm-up, best (and median) of several trials:

* ``square``: one large ``n×n @ n×n`` product (default n = 4096, 2n³ FLOPs): the practical peak.
* ``model``: the products one training step of the 784-300-100-10 MLP performs at each batch size B —
  forward ``(B, fan_in) @ (fan_in, fan_out)`` for the 3 layers, weight gradients ``(fan_in, B) @ (B, fan_out)``
  for the 3 layers, input gradients ``(B, fan_out) @ (fan_out, fan_in)`` for layers 2 and 3 (layer 1's input
  gradient is never needed), each with its operands transposed as the framework stores them (Flax kernels
  ``(in, out)``, PyTorch weights ``(out, in)``; see :func:`step_shapes`). Each product is called many times
  in a row, one compiled call each (JAX dispatches asynchronously and is synchronized every
  ``SYNC_EVERY`` calls; PyTorch runs synchronously), so the small ones include the per-call overhead.
  The model-shape throughput is the FLOPs of one step's products over their summed best times.

  (Timing them inside one ``lax.scan`` instead would avoid the call overhead, but XLA's CPU backend runs a
  lone transposed product inside a loop body 3× slower than the same product as its own program or inside a
  whole training step, so that figure would understate the hardware.)

``--backend jax`` (default) uses jitted ``lax.dot_general`` on the default device (what deeprun and
Keras-on-JAX run on); ``--backend torch`` uses ``torch.mm`` with ``torch.set_num_threads(os.cpu_count())``.
Run as its own process by ``bench.py``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

LAYERS = ((784, 300), (300, 100), (100, 10))
SYNC_EVERY = 16  # JAX: wait for the results every this many calls, so queued outputs stay few


def step_shapes(batch_size: int, layout: str) -> list[dict]:
    """The products of one training step, each as it is stored: ``A (m×k) @ B (k×n)`` where ``ta`` means A is
    held as its transpose ``(k, m)`` and ``tb`` means B is held as ``(n, k)``; FLOPs 2·m·k·n.

    ``layout="flax"``: kernels ``(in, out)`` — forward ``x @ K``, ``dK = xᵀ @ dy``, ``dx = dy @ Kᵀ``.
    ``layout="torch"``: ``nn.Linear`` weights ``(out, in)`` — forward ``x @ Wᵀ``, ``dW = dyᵀ @ x``,
    ``dx = dy @ W``.
    """
    flax = layout == "flax"
    b = batch_size
    shapes = []
    for i, (fan_in, fan_out) in enumerate(LAYERS, 1):
        shapes.append({"name": f"fwd{i}", "m": b, "k": fan_in, "n": fan_out, "ta": False, "tb": not flax})
        if flax:
            shapes.append({"name": f"dW{i}", "m": fan_in, "k": b, "n": fan_out, "ta": True, "tb": False})
        else:
            shapes.append({"name": f"dW{i}", "m": fan_out, "k": b, "n": fan_in, "ta": True, "tb": False})
        if i > 1:  # layer 1's input gradient is never needed
            shapes.append({"name": f"dX{i}", "m": b, "k": fan_out, "n": fan_in, "ta": False, "tb": flax})
    return shapes


def time_calls(call, sync, target_s: float, trials: int, sync_every: int = 1) -> list[float]:
    """Seconds per ``call()`` for each trial; a trial repeats the call until it lasts about ``target_s``
    (and ends early past 5× that: a busy machine can slow small products 10× or more)."""
    sync(call())  # warm-up (compilation, allocation)
    start = time.perf_counter()
    for _ in range(3):
        sync(call())
    once = max((time.perf_counter() - start) / 3, 1e-7)
    repeats = max(1, min(100_000, round(target_s / once)))
    results = []
    for _ in range(trials):
        start = time.perf_counter()
        done = 0
        while done < repeats and (done == 0 or time.perf_counter() - start < 5 * target_s):
            out = call()
            done += 1
            if done % sync_every == 0:
                sync(out)
        sync(out)
        results.append((time.perf_counter() - start) / done)
    return results


def summarize(flops: float, seconds: list[float], **info) -> dict:
    best = min(seconds)
    return {
        **info,
        "flops": flops,
        "best_s": best,
        "median_s": statistics.median(seconds),
        "gflops_best": flops / best / 1e9,
        "gflops_median": flops / statistics.median(seconds) / 1e9,
    }


def aggregate(rows: list[dict]) -> dict:
    flops = sum(r["flops"] for r in rows)
    best = sum(r["best_s"] for r in rows)
    return {"step_flops": flops, "step_best_s": best, "gflops": flops / best / 1e9, "shapes": rows}


def jax_backend(args) -> tuple[dict, dict, dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)

    def sync(x):
        jax.block_until_ready(x)

    def product(ta: bool, tb: bool):
        dims = (((0 if ta else 1,), (1 if tb else 0,)), ((), ()))
        return jax.jit(lambda a, b: jax.lax.dot_general(a, b, dims))

    def operands(m, k, n, ta, tb):
        a = jnp.asarray(rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32))
        b = jnp.asarray(rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32))
        return a, b

    n = args.size
    a, b = operands(n, n, n, False, False)
    fn = product(False, False)
    seconds = time_calls(lambda fn=fn, a=a, b=b: fn(a, b), sync, args.target_s, args.trials)
    square = summarize(2.0 * n**3, seconds, n=n)

    model = {}
    for batch_size in args.batch_sizes:
        rows = []
        for shape in step_shapes(batch_size, "flax"):
            m, k, n_, ta, tb = (shape[key] for key in ("m", "k", "n", "ta", "tb"))
            a, b = operands(m, k, n_, ta, tb)
            fn = product(ta, tb)
            seconds = time_calls(lambda fn=fn, a=a, b=b: fn(a, b), sync, args.target_s, args.trials, SYNC_EVERY)
            rows.append(summarize(2.0 * m * k * n_, seconds, **shape))
        model[str(batch_size)] = aggregate(rows)
    info = {"jax": jax.__version__, "device": str(jax.devices()[0]), "platform": jax.default_backend()}
    return square, model, info


def torch_backend(args) -> tuple[dict, dict, dict]:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    generator = torch.Generator().manual_seed(0)

    def operands(m, k, n, ta, tb):
        a = torch.randn(*((k, m) if ta else (m, k)), generator=generator)
        b = torch.randn(*((n, k) if tb else (k, n)), generator=generator)
        return (a.t() if ta else a), (b.t() if tb else b), torch.empty(m, n)

    def no_sync(_):
        pass

    n = args.size
    a, b, out = operands(n, n, n, False, False)
    seconds = time_calls(lambda a=a, b=b, out=out: torch.mm(a, b, out=out), no_sync, args.target_s, args.trials)
    square = summarize(2.0 * n**3, seconds, n=n)

    model = {}
    for batch_size in args.batch_sizes:
        rows = []
        for shape in step_shapes(batch_size, "torch"):
            m, k, n_, ta, tb = (shape[key] for key in ("m", "k", "n", "ta", "tb"))
            a, b, out = operands(m, k, n_, ta, tb)
            seconds = time_calls(lambda a=a, b=b, out=out: torch.mm(a, b, out=out), no_sync, args.target_s, args.trials)
            rows.append(summarize(2.0 * m * k * n_, seconds, **shape))
        model[str(batch_size)] = aggregate(rows)
    info = {"torch": torch.__version__, "num_threads": torch.get_num_threads()}
    return square, model, info


def main() -> None:
    parser = argparse.ArgumentParser(description="float32 matmul throughput (square and model shapes)")
    parser.add_argument("--backend", choices=("jax", "torch"), default="jax")
    parser.add_argument("--size", type=int, default=4096, help="n of the square n×n @ n×n product")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--target-s", type=float, default=0.2, help="about how long one trial lasts")
    args = parser.parse_args()
    square, model, info = (jax_backend if args.backend == "jax" else torch_backend)(args)
    print(json.dumps({"backend": args.backend, "square": square, "model": model, **info}), flush=True)


if __name__ == "__main__":
    main()
