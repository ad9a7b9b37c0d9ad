"""The machine's float32 matrix-multiply throughput, as the reference the trainers are measured against.

Two kinds of product, each timed after a warm-up, best (and median) of several trials:

* ``square``: one large ``n×n @ n×n`` product (default n = 4096, 2n³ FLOPs): the practical peak.
* ``model``: the products one training step of the 784-300-100-10 MLP performs at each batch size B —
  forward ``(B, fan_in) @ (fan_in, fan_out)`` for the 3 layers, weight gradients ``(fan_in, B) @ (B, fan_out)``
  for the 3 layers, input gradients ``(B, fan_out) @ (fan_out, fan_in)`` for layers 2 and 3 (layer 1's input
  gradient is never needed). Small products are dominated by call overhead, so each call runs ``k`` of them
  in one compiled ``lax.scan`` over ``k`` different left operands (JAX), or in a tight loop (PyTorch).
  The model-shape throughput is the FLOPs of one step's products over their summed best times.

``--backend jax`` (default) uses jitted ``jnp.dot``/``lax.dot_general`` on the default device (what deeprun
and Keras-on-JAX run on); ``--backend torch`` uses ``torch.mm`` with ``torch.set_num_threads(os.cpu_count())``.
Run as its own process by ``bench.py``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

LAYERS = ((784, 300), (300, 100), (100, 10))


def step_shapes(batch_size: int) -> list[dict]:
    """The (M, K, N) products of one training step: name, M, K, N (FLOPs 2·M·K·N)."""
    shapes = []
    for i, (fan_in, fan_out) in enumerate(LAYERS, 1):
        shapes.append({"name": f"fwd{i}", "m": batch_size, "k": fan_in, "n": fan_out})
    for i, (fan_in, fan_out) in enumerate(LAYERS, 1):
        shapes.append({"name": f"dW{i}", "m": fan_in, "k": batch_size, "n": fan_out})
    for i, (fan_in, fan_out) in enumerate(LAYERS, 1):
        if i > 1:
            shapes.append({"name": f"dX{i}", "m": batch_size, "k": fan_out, "n": fan_in})
    return shapes


def time_calls(call, sync, target_s: float, trials: int) -> list[float]:
    """Seconds per ``call()`` for each trial; a trial repeats the call until it lasts about ``target_s``."""
    sync(call())  # warm-up (compilation, allocation)
    start = time.perf_counter()
    sync(call())
    once = max(time.perf_counter() - start, 1e-7)
    repeats = max(1, min(10_000, round(target_s / once)))
    results = []
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            out = call()
        sync(out)
        results.append((time.perf_counter() - start) / repeats)
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


def jax_backend(args) -> tuple[dict, dict, dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)

    def sync(x):
        jax.block_until_ready(x)

    n = args.size
    a = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    b = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    square_fn = jax.jit(jnp.dot)
    square = summarize(2.0 * n**3, time_calls(lambda: square_fn(a, b), sync, args.target_s, args.trials), n=n)

    @jax.jit
    def stacked(xs, w):
        return jax.lax.scan(lambda carry, x: (carry, jnp.dot(x, w)), None, xs)[1]

    model = {}
    for batch_size in args.batch_sizes:
        rows = []
        for shape in step_shapes(batch_size):
            m, k, n_ = shape["m"], shape["k"], shape["n"]
            per_call = max(1, min(args.max_stack, int(args.stack_bytes // (4 * m * k))))
            xs = jnp.asarray(rng.standard_normal((per_call, m, k), dtype=np.float32))
            w = jnp.asarray(rng.standard_normal((k, n_), dtype=np.float32))
            seconds = time_calls(lambda: stacked(xs, w), sync, args.target_s, args.trials)
            rows.append(summarize(2.0 * m * k * n_, [s / per_call for s in seconds], **shape, per_call=per_call))
        model[str(batch_size)] = aggregate(rows)
    info = {"jax": jax.__version__, "device": str(jax.devices()[0]), "platform": jax.default_backend()}
    return square, model, info


def torch_backend(args) -> tuple[dict, dict, dict]:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    generator = torch.Generator().manual_seed(0)
    n = args.size
    a = torch.randn(n, n, generator=generator)
    b = torch.randn(n, n, generator=generator)
    out = torch.empty(n, n)
    square = summarize(
        2.0 * n**3, time_calls(lambda: torch.mm(a, b, out=out), lambda x: None, args.target_s, args.trials), n=n
    )
    model = {}
    for batch_size in args.batch_sizes:
        rows = []
        for shape in step_shapes(batch_size):
            m, k, n_ = shape["m"], shape["k"], shape["n"]
            per_call = max(1, min(args.max_stack, int(args.stack_bytes // (4 * m * k))))
            xs = torch.randn(per_call, m, k, generator=generator)
            w = torch.randn(k, n_, generator=generator)
            result = torch.empty(m, n_)

            def call(xs=xs, w=w, result=result):
                for x in xs:
                    torch.mm(x, w, out=result)
                return result

            seconds = time_calls(call, lambda x: None, args.target_s, args.trials)
            rows.append(summarize(2.0 * m * k * n_, [s / per_call for s in seconds], **shape, per_call=per_call))
        model[str(batch_size)] = aggregate(rows)
    info = {"torch": torch.__version__, "num_threads": torch.get_num_threads()}
    return square, model, info


def aggregate(rows: list[dict]) -> dict:
    flops = sum(r["flops"] for r in rows)
    best = sum(r["best_s"] for r in rows)
    return {"step_flops": flops, "step_best_s": best, "gflops": flops / best / 1e9, "shapes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description="float32 matmul throughput (square and model shapes)")
    parser.add_argument("--backend", choices=("jax", "torch"), default="jax")
    parser.add_argument("--size", type=int, default=4096, help="n of the square n×n @ n×n product")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--target-s", type=float, default=0.2, help="about how long one trial lasts")
    parser.add_argument("--stack-bytes", type=float, default=32e6, help="left operands per call, in bytes")
    parser.add_argument("--max-stack", type=int, default=256, help="at most this many products per call")
    args = parser.parse_args()
    square, model, info = (jax_backend if args.backend == "jax" else torch_backend)(args)
    print(json.dumps({"backend": args.backend, "square": square, "model": model, **info}), flush=True)


if __name__ == "__main__":
    main()
