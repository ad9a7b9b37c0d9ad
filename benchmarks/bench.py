"""deeprun against its peers: the same MLP, data and optimizer, trained by each implementation in turn.

Implementations (``--only`` picks some; each run is a fresh Python process, so cold start and peak memory
are its own):

* ``deeprun``       the real ``deeprun`` CLI (``python -m deeprun.commands.run``): one compiled XLA program per epoch;
                    its persistent compilation cache off, so every process compiles, like the peers
* ``deeprun_cached`` the same with deeprun's default persistent compilation cache, warmed by untimed runs
* ``jax_scan``      the reference floor: a hand-written jit + lax.scan epoch, no validation (peers/jax_scan.py)
* ``keras``         Keras 3 on JAX, ``model.fit`` with default settings          (peers/keras_jax.py)
* ``keras_spe100``  the same with ``steps_per_execution=100``                    (peers/keras_jax.py)
* ``torch``         a plain PyTorch loop on the CPU                              (peers/torch_loop.py)

Model 784-300-100-10, ELU, He-normal hidden / Glorot-uniform output, softmax cross-entropy; Fashion-MNIST
55,000 train / last 5,000 validation, pixels / 255 (``deeprun.data``, so every peer sees the same arrays);
SGD momentum 0.9, lr 0.01 constant, no early stopping; batch sizes 32 and 256.

Per batch size and implementation, the harness reports the steady-state seconds per epoch (median of the
epochs after the first, then median over ``--repeats``), the first epoch (compilation included), the
whole-process wall time of a ``--cold-epochs`` run from a fresh process, the peak RSS, the achieved GFLOP/s
and its share of the machine's measured float32 matmul peak (``matmul.py``), and the ratio of each peer's
steady epoch time to deeprun's. Implementations alternate round-robin (order rotated each repeat), so a
change in machine load hits all of them alike.

Then the fused launcher's modes on a sweep of ``--sweep-seeds`` seeds (``sweep.py``): the default
(worker processes, bitwise the numbers of each job alone), in one process, ``batched`` (vmap), one by
one, and the Keras peer run once per seed; then the compile time of the epoch program for the 2-layer
MLP and the 100-layer SELU net (``compile_time.py``), and the cost of progress within the epoch on a
terminal (``step_progress.py``).

Writes ``<out>/latest.json`` (everything, with every run's raw numbers and the machine) and
``<out>/latest.md`` (the tables, also printed).

    python benchmarks/bench.py                                   # the full benchmark
    python benchmarks/bench.py --batch-sizes 256 --epochs 2 --repeats 1 --only deeprun,torch   # quick
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sweep import run_sweeps, sweep_markdown  # benchmarks/sweep.py, beside this script

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PEERS = BENCH_DIR / "peers"

N_TRAIN = 55_000
N_VAL = 5_000
LAYERS = ((784, 300), (300, 100), (100, 10))
MACS = sum(fan_in * fan_out for fan_in, fan_out in LAYERS)  # 266,200 multiply-adds per example, forward
PARAMS = sum(fan_in * fan_out + fan_out for fan_in, fan_out in LAYERS)  # 266,610
FLOPS_PER_EPOCH = 6 * MACS * N_TRAIN  # forward 2·MACs + backward 4·MACs per training example
# What the convention leaves out or over-counts, for the footnote: the validation pass (forward only) and
# layer 1's input gradient (the inputs need no gradient, so no implementation computes it).
VALIDATION_SHARE = 2 * MACS * N_VAL / FLOPS_PER_EPOCH
NEEDED_MATMUL_SHARE = (3 * MACS - LAYERS[0][0] * LAYERS[0][1]) / (3 * MACS)


@dataclasses.dataclass(frozen=True)
class Implementation:
    key: str
    label: str
    kind: str  # "deeprun" (CLI + run folder) or "peer" (prints one JSON line)
    argv: tuple[str, ...] = ()


# deeprun keeps a persistent XLA compilation cache by default (trainer.compilation_cache): a process that
# finds its programs there compiles nothing. ``deeprun`` turns it off, so every process compiles from scratch
# like the peers (none of which keeps one by default); ``deeprun_cached`` keeps it, warmed by an untimed run.
CACHE_OVERRIDE = "trainer.compilation_cache=false"
IMPLEMENTATIONS = {
    impl.key: impl
    for impl in (
        Implementation("deeprun", "deeprun (CLI), no compilation cache", "deeprun", (CACHE_OVERRIDE,)),
        Implementation("deeprun_cached", "deeprun (CLI), warm compilation cache", "deeprun"),
        Implementation(
            "jax_scan", "bare jit + lax.scan loop (reference, no validation)", "peer", (str(PEERS / "jax_scan.py"),)
        ),
        Implementation("keras", "Keras 3 / JAX, fit() defaults", "peer", (str(PEERS / "keras_jax.py"),)),
        Implementation(
            "keras_spe100",
            "Keras 3 / JAX, steps_per_execution=100",
            "peer",
            (str(PEERS / "keras_jax.py"), "--steps-per-execution", "100"),
        ),
        Implementation(
            "torch", "PyTorch loop (GPU when CUDA is available, else CPU)", "peer", (str(PEERS / "torch_loop.py"),)
        ),
    )
}


# --------------------------------------------------------------------------------------------------
# Running one process
# --------------------------------------------------------------------------------------------------


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_process(argv: list[str], timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``argv`` to completion; its own wall time and peak RSS (``os.wait4`` rusage of that child)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        killer = threading.Timer(timeout_s, process.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            killer.cancel()
        wall_s = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return {
        "argv": argv,
        "returncode": process.returncode,
        "timed_out": process.returncode == -9 and wall_s >= timeout_s,
        "wall_s": wall_s,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "stdout": stdout,
        "stderr": stderr,
    }


def last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    return None


def deeprun_has_compilation_cache() -> bool:
    """Whether this deeprun has the ``trainer.compilation_cache`` option (an unknown key would fail the run)."""
    with contextlib.suppress(OSError):
        return any(
            line.startswith("compilation_cache:")
            for line in (ROOT / "conf" / "trainer" / "default.yaml").read_text().splitlines()
        )
    return False


def deeprun_argv(batch_size: int, epochs: int, run_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    if not deeprun_has_compilation_cache():
        extra = tuple(arg for arg in extra if arg != CACHE_OVERRIDE)
    return [
        sys.executable,
        "-m",
        "deeprun.commands.run",
        "schedule=constant",
        "optimizer=momentum",
        "trainer.early_stopping.enabled=false",
        "trainer.checkpoint=false",
        "trainer.plots=false",
        f"trainer.batch_size={batch_size}",
        f"trainer.epochs={epochs}",
        "activation=elu",
        "initializer=he_normal",
        *extra,
        f"hydra.run.dir={run_dir}",
    ]


def read_deeprun_run(run_dir: Path) -> dict[str, Any]:
    """Per-epoch times from ``metrics.jsonl`` and the compilation time from ``summary.json``."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run_dir / "summary.json").read_text())
    epoch_times = [float(r["epoch_time_s"]) for r in records]
    compile_s = float(summary["compile_time_s"])
    return {
        "epoch_times": epoch_times,
        # deeprun compiles ahead of time, before its first epoch: the first epoch "with compilation" is both.
        "first_epoch_s": compile_s + epoch_times[0],
        "compile_time_s": compile_s,
        "val_accuracy": float(records[-1]["val/accuracy"]),
        "train_loss": float(records[-1]["train/loss"]),
        "status": summary.get("status"),
    }


def export_data(folder: Path, timeout_s: float) -> dict[str, Any]:
    """Write deeprun's Fashion-MNIST arrays (``deeprun.data``) to ``folder`` for the peers, in a process of
    its own: the peers then load plain ``.npy`` files and need not import deeprun (which imports JAX)."""
    proc = run_process([sys.executable, str(PEERS / "_common.py"), "--export", str(folder)], timeout_s)
    if proc["returncode"] != 0:
        return {"ok": False, "error": f"exit code {proc['returncode']}", "stderr_tail": tail(proc["stderr"])}
    return {"ok": True, "wall_s": proc["wall_s"]}


def run_implementation(
    impl: Implementation, batch_size: int, epochs: int, timeout_s: float, data_dir: Path | None = None
) -> dict[str, Any]:
    """One training process of ``impl``; the run's record, with ``ok`` and on failure ``error``."""
    env = dict(os.environ)
    env.pop("KERAS_BACKEND", None)  # the Keras peer sets it itself
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-{impl.key}-"))
    try:
        if impl.kind == "deeprun":
            argv = deeprun_argv(batch_size, epochs, scratch / "run", impl.argv)
        else:
            argv = [sys.executable, *impl.argv, "--batch-size", str(batch_size), "--epochs", str(epochs)]
            if data_dir is not None:
                argv += ["--data", str(data_dir)]
        proc = run_process(argv, timeout_s, env)
        record: dict[str, Any] = {
            "implementation": impl.key,
            "batch_size": batch_size,
            "epochs": epochs,
            "command": shlex.join(argv),
            **{k: proc[k] for k in ("returncode", "wall_s", "peak_rss_mib", "user_s", "sys_s")},
        }
        result, error = None, None
        if proc["timed_out"]:
            error = f"timed out after {timeout_s:.0f} s"
        elif proc["returncode"] != 0:
            error = f"exit code {proc['returncode']}"
        else:
            try:
                result = read_deeprun_run(scratch / "run") if impl.kind == "deeprun" else last_json_line(proc["stdout"])
                if not result or not result.get("epoch_times"):
                    error = "no result line on stdout"
            except (OSError, ValueError, KeyError, IndexError) as exc:
                error = f"could not read its results: {exc!r}"
        if error is None and len(result["epoch_times"]) != epochs:
            error = f"ran {len(result['epoch_times'])} of {epochs} epochs"
        record["ok"] = error is None
        if error is None:
            record.update(result)
        else:
            record["error"] = error
            record["stderr_tail"] = tail(proc["stderr"]) or tail(proc["stdout"])
        return record
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_matmul(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(BENCH_DIR / "matmul.py"),
        "--backend",
        backend,
        "--size",
        str(args.matmul_size),
        "--batch-sizes",
        *map(str, args.batch_sizes),
    ]
    proc = run_process(argv, args.timeout, dict(os.environ))
    result = last_json_line(proc["stdout"]) if proc["returncode"] == 0 else None
    if result is None:
        return {
            "backend": backend,
            "ok": False,
            "error": f"exit code {proc['returncode']}",
            "stderr_tail": tail(proc["stderr"]),
        }
    return {"ok": True, "wall_s": proc["wall_s"], **result}


# --------------------------------------------------------------------------------------------------
# Machine and versions
# --------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    flags = ""
    with contextlib.suppress(OSError):
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    versions = {"python": platform.python_version()}
    for package in ("deeprun", "jax", "jaxlib", "flax", "optax", "keras", "torch", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "simd": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags.split()],
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "versions": versions,
        "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    """The checked-out commit, read from .git without running git."""
    with contextlib.suppress(OSError, IndexError):
        head = (ROOT / ".git" / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(None, 1)[1]
        ref_file = ROOT / ".git" / ref
        if ref_file.exists():
            return ref_file.read_text().strip()
        for line in (ROOT / ".git" / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    return None


# --------------------------------------------------------------------------------------------------
# Aggregation and the report
# --------------------------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def steady_of(run: dict[str, Any]) -> float | None:
    times = run["epoch_times"][1:]
    return statistics.median(times) if times else None


def aggregate(runs: list[dict], matmul_runs: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    squares = {}
    for m in matmul_runs:
        if m.get("ok"):
            squares.setdefault(m["backend"], []).append(m["square"]["gflops_best"])
    peak_by_backend = {backend: max(values) for backend, values in squares.items()}
    peak = max(peak_by_backend.values()) if peak_by_backend else None
    model_shapes = {}
    for bs in args.batch_sizes:
        model_shapes[str(bs)] = {}
        for m in matmul_runs:
            if m.get("ok") and str(bs) in m["model"]:
                best = model_shapes[str(bs)].get(m["backend"], 0.0)
                model_shapes[str(bs)][m["backend"]] = max(best, m["model"][str(bs)]["gflops"])

    tables: dict[str, list[dict]] = {}
    for bs in args.batch_sizes:
        rows = []
        for key in args.only:
            timed = [r for r in runs if r["implementation"] == key and r["batch_size"] == bs and r["role"] == "timed"]
            cold = [r for r in runs if r["implementation"] == key and r["batch_size"] == bs and r["role"] == "cold"]
            ok_timed = [r for r in timed if r["ok"]]
            ok_cold = [r for r in cold if r["ok"]]
            warmup = [r for r in runs if r["implementation"] == key and r["batch_size"] == bs and r["role"] == "warmup"]
            failures = [r for r in warmup + timed + cold if not r["ok"]]
            steady = median([steady_of(r) for r in ok_timed])
            gflops = FLOPS_PER_EPOCH / steady / 1e9 if steady else None
            rows.append(
                {
                    "implementation": key,
                    "label": IMPLEMENTATIONS[key].label,
                    "ok": bool(ok_timed),
                    "runs": len(timed),
                    "failed_runs": len(failures),
                    "steady_epoch_s": steady,
                    "steady_epoch_s_per_repeat": [steady_of(r) for r in ok_timed],
                    "first_epoch_s": median([r["first_epoch_s"] for r in ok_timed]),
                    "compile_time_s": median([r.get("compile_time_s") for r in ok_timed]),
                    "cold_process_s": median([r["wall_s"] for r in ok_cold]),
                    "cold_epochs": args.cold_epochs,
                    "peak_rss_mib": max((r["peak_rss_mib"] for r in ok_timed + ok_cold), default=None),
                    "gflops": gflops,
                    "pct_of_matmul_peak": 100 * gflops / peak if gflops and peak else None,
                    "val_accuracy": median([r["val_accuracy"] for r in ok_timed]),
                    "train_loss": median([r["train_loss"] for r in ok_timed]),
                    "errors": [
                        {"role": r["role"], "repeat": r["repeat"], "error": r["error"], "stderr_tail": r["stderr_tail"]}
                        for r in failures
                    ],
                }
            )
        base = next(
            (r for key in ("deeprun", "deeprun_cached") for r in rows if r["implementation"] == key and r["ok"]), None
        )
        for row in rows:
            for field, ratio in (
                ("steady_epoch_s", "speed_ratio"),
                ("first_epoch_s", "first_epoch_ratio"),
                ("cold_process_s", "cold_process_ratio"),
            ):
                row[ratio] = row[field] / base[field] if base and row[field] and base[field] else None
        tables[str(bs)] = rows
    return {
        "flops_per_epoch": FLOPS_PER_EPOCH,
        "macs_per_example": MACS,
        "matmul_peak_gflops": peak,
        "matmul_peak_by_backend": peak_by_backend,
        "model_shape_gflops": model_shapes,
        "tables": tables,
    }


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def markdown(report: dict[str, Any]) -> str:
    summary, machine, settings = report["summary"], report["machine"], report["settings"]
    versions = machine["versions"]
    peak = summary["matmul_peak_gflops"]
    by_backend = summary["matmul_peak_by_backend"]
    n = settings["matmul_size"]
    lines = [
        "# deeprun benchmark",
        "",
        f"`{report['command']}` · {report['date']} · {machine['cpu_model']}, {machine['cpus_usable']} cores"
        f" ({', '.join(machine['simd']) or 'no AVX'}), {machine['memory_gib']} GiB · "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        "",
        (
            f"float32 matmul peak ({n}×{n} @ {n}×{n}, best of its trials, before and after the runs):"
            f" **{peak:.0f} GFLOP/s** (" + ", ".join(f"{k} {v:.0f}" for k, v in sorted(by_backend.items())) + "). "
            if peak
            else "float32 matmul peak: not measured. "
        )
        + f"{settings['epochs']} epochs per timed run (steady = median of epochs "
        + (f"2–{settings['epochs']}" if settings["epochs"] > 2 else "2")
        + "),"
        f" {settings['repeats']} repeat(s), implementations alternated;"
        f" load average {report['loadavg_start'][0]:.2f} at start, {report['loadavg_end'][0]:.2f} at end.",
    ]
    for bs, rows in summary["tables"].items():
        steps = -(-N_TRAIN // int(bs))
        shapes = summary["model_shape_gflops"].get(bs, {})
        lines += [
            "",
            f"## Batch size {bs} ({steps:,} steps per epoch)",
            "",
            "Model-shape matmul throughput at this batch size (one step's products, timed alone): "
            + (", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in sorted(shapes.items())) or "–"),
            "",
            "| implementation | steady s/epoch | first epoch s | "
            + (
                f"cold {settings['cold_epochs']}-epoch process s"
                if settings["cold_epochs"]
                else "cold process (skipped)"
            )
            + " | peak RSS MiB | GFLOP/s | % of matmul peak "
            "| speed ratio vs deeprun | final val acc |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            if not row["ok"]:
                error = row["errors"][0]["error"] if row["errors"] else "failed"
                lines.append(f"| {row['label']} | **FAILED** ({error}) | – | – | – | – | – | – | – |")
                continue
            partial = f" ({row['failed_runs']} failed run(s))" if row["failed_runs"] else ""
            lines.append(
                f"| {row['label']}{partial} | {fmt(row['steady_epoch_s'], '.3f')} | {fmt(row['first_epoch_s'], '.2f')}"
                f" | {fmt(row['cold_process_s'], '.1f')} | {fmt(row['peak_rss_mib'], ',.0f')}"
                f" | {fmt(row['gflops'], '.1f')} | {fmt(row['pct_of_matmul_peak'], '.1f', '%')}"
                f" | {fmt(row['speed_ratio'], '.2f', '×')} | {fmt(row['val_accuracy'], '.4f')} |"
            )
    lines += [
        "",
        f"GFLOP/s = {FLOPS_PER_EPOCH / 1e9:.1f} GFLOP per epoch / steady s per epoch, where FLOPs per epoch ="
        f" 6 · MACs · N_train = 6 · {MACS:,} · {N_TRAIN:,} (MACs = 784·300 + 300·100 + 100·10 multiply-adds"
        " per example; forward 2·MACs, backward 4·MACs). The count is the usual convention: it ignores the"
        " elementwise work and the per-epoch validation pass (5,000 forward passes, "
        f"{100 * VALIDATION_SHARE:.0f}% more), and counts layer 1's input gradient, which no implementation"
        f" needs to compute (the matmuls a step really needs are {100 * NEEDED_MATMUL_SHARE:.0f}% of it)."
        " % of matmul peak = GFLOP/s / the float32 square-matmul peak above.",
        "",
        "Steady s/epoch: median over the epochs after the first, then median over repeats; every epoch time"
        " includes the validation pass. First epoch: the first epoch's time with compilation (deeprun: its"
        " ahead-of-time compile_time_s + first epoch_time_s, with its persistent compilation cache off except"
        " in the warm-cache row; Keras: the first epoch traces and compiles;"
        " PyTorch: no compilation)."
        + (
            " Cold process: wall time of a fresh `python` process that imports, loads the data, trains"
            f" {settings['cold_epochs']} epochs and exits (deeprun also evaluates the test set and writes its run"
            " folder)."
            if settings["cold_epochs"]
            else ""
        )
        + " Peak RSS: the largest max-RSS of the implementation's processes (os.wait4)."
        " Speed ratio = this row's steady s/epoch / deeprun's: above 1× deeprun is faster.",
    ]
    failures = [
        (
            f"**{row['label']}**, batch size {bs}, {error['role']} run"
            + (f", repeat {error['repeat'] + 1}" if error["repeat"] >= 0 else "")
            + f": {error['error']}",
            error["stderr_tail"],
        )
        for bs, rows in summary["tables"].items()
        for row in rows
        for error in row["errors"]
    ] + [
        (f"**matmul.py --backend {m['backend']}** ({m.get('when', '')}): {m['error']}", m["stderr_tail"])
        for m in report.get("matmul", [])
        if not m.get("ok")
    ]
    if failures:
        lines += ["", "## Failures", ""]
        for title, stderr_tail in failures:
            lines += [title, "", "```", stderr_tail or "(no output)", "```", ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def compile_time_markdown(result: dict[str, Any]) -> list[str]:
    """The compile-time table (``compile_time.py``'s result)."""
    lines = [
        "## Compile time of the epoch program (persistent cache off)",
        "",
        "| model | trace s | compile s | total s |",
        "|---|---:|---:|---:|",
    ]
    for label, times in result["models"].items():
        lines.append(f"| {label} | {times['trace_s']:.2f} | {times['compile_s']:.2f} | {times['total_s']:.2f} |")
    lines += ["", f"100-layer net / 2-layer MLP: {result['ratio']:.2f}×"]
    return lines


def step_progress_markdown(result: dict[str, Any]) -> list[str]:
    """The cost of progress within the epoch (``step_progress.py``'s result)."""
    times = result["epoch_s"]
    return [
        f"## Progress within the epoch (batch {result['batch_size']}, {result['steps_per_epoch']} steps, "
        f"{result['reports']} host reports per epoch)",
        "",
        "| epoch program | median epoch s |",
        "|---|---:|",
        f"| without progress (a pipe, a file) | {times['without']:.3f} |",
        f"| with progress (a terminal) | {times['with']:.3f} |",
        "",
        f"overhead: {100 * result['overhead']:+.1f} % (median of {result['epochs']} epochs each, alternating)",
    ]


def default_implementations() -> list[str]:
    keys = list(IMPLEMENTATIONS)
    if not deeprun_has_compilation_cache():  # then deeprun_cached would be the same as deeprun
        keys.remove("deeprun_cached")
    return keys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument(
        "--epochs", type=int, default=4, help="epochs per timed run; steady = median of epochs 2..N (default 4)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed and cold runs per implementation and batch size (median taken)"
    )
    parser.add_argument(
        "--cold-epochs", type=int, default=3, help="epochs of the cold whole-process run (0 skips the cold runs)"
    )
    parser.add_argument(
        "--only",
        default=",".join(default_implementations()),
        help=f"comma-separated subset of {','.join(IMPLEMENTATIONS)}",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="folder for latest.json and latest.md")
    parser.add_argument("--matmul-size", type=int, default=4096, help="n of the square matmul peak")
    parser.add_argument("--no-matmul", action="store_true", help="skip the matmul measurements")
    parser.add_argument("--no-compile-time", action="store_true", help="skip the deep net's compile time")
    parser.add_argument(
        "--no-step-progress", action="store_true", help="skip the cost of progress within the epoch (terminal)"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a process is killed")
    parser.add_argument("--sweep-seeds", type=int, default=8, help="seeds of the launcher-mode sweep (0 skips it)")
    parser.add_argument("--sweep-epochs", type=int, default=2, help="epochs of each job of that sweep")
    args = parser.parse_args(argv)
    args.only = [key.strip() for key in args.only.split(",") if key.strip()]
    unknown = [key for key in args.only if key not in IMPLEMENTATIONS]
    if unknown or not args.only:
        parser.error(f"--only: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(IMPLEMENTATIONS)}")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the steady state is the epochs after the first)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/bench.py", *(sys.argv[1:] if argv is None else argv)])
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        return benchmark(args, command, Path(scratch))


def benchmark(args: argparse.Namespace, command: str, scratch: Path) -> int:
    """Everything: matmul, data export, the alternating runs, matmul again, the report; returns the exit code."""
    started = dt.datetime.now().astimezone()
    report: dict[str, Any] = {
        "command": command,
        "date": started.isoformat(timespec="seconds"),
        "settings": {
            "batch_sizes": args.batch_sizes,
            "epochs": args.epochs,
            "repeats": args.repeats,
            "cold_epochs": args.cold_epochs,
            "implementations": args.only,
            "matmul_size": args.matmul_size,
            "n_train": N_TRAIN,
            "n_val": N_VAL,
            "params": PARAMS,
        },
        "machine": machine_info(),
        "loadavg_start": list(os.getloadavg()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    matmul_runs: list[dict] = []

    def measure_matmul(when: str) -> None:
        if args.no_matmul:
            return
        for backend in ("jax", "torch"):
            if backend == "torch" and importlib.util.find_spec("torch") is None:
                continue
            log(f"matmul ({backend}, {when}) ...")
            result = run_matmul(backend, args)
            result["when"] = when
            matmul_runs.append(result)
            if result["ok"]:
                shapes = ", ".join(f"bs {bs} {m['gflops']:.0f}" for bs, m in result["model"].items())
                log(f"  square {result['square']['gflops_best']:.0f} GFLOP/s; model shapes {shapes} GFLOP/s")
            else:
                log(f"  FAILED: {result['error']}\n{result['stderr_tail']}")

    def save(partial: bool) -> None:
        report["runs"] = runs
        report["matmul"] = matmul_runs
        report["summary"] = aggregate(runs, matmul_runs, args)
        report["partial"] = partial
        (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")

    measure_matmul("start")
    data_dir: Path | None = None
    if any(IMPLEMENTATIONS[key].kind == "peer" for key in args.only):
        log("exporting deeprun's Fashion-MNIST arrays for the peers ...")
        report["data_export"] = export_data(scratch / "fashion_mnist", args.timeout)
        if report["data_export"]["ok"]:
            data_dir = scratch / "fashion_mnist"
        else:
            log(f"  FAILED (the peers will load deeprun.data themselves):\n{report['data_export']['stderr_tail']}")
    roles = [("timed", args.epochs)] + ([("cold", args.cold_epochs)] if args.cold_epochs > 0 else [])
    if "deeprun_cached" in args.only:
        # One warm-up per batch size and epoch count that the timed and cold runs use (a cache entry is
        # per compiled program; whether the epoch count enters it is deeprun's business).
        for bs in args.batch_sizes:
            for epochs in sorted({epochs for _, epochs in roles}):
                log(f"warming deeprun's compilation cache, batch {bs}, {epochs} epochs (untimed) ...")
                record = run_implementation(IMPLEMENTATIONS["deeprun_cached"], bs, epochs, args.timeout)
                record.update(role="warmup", repeat=-1, loadavg=list(os.getloadavg()))
                runs.append(record)
                if not record["ok"]:
                    log(f"  FAILED: {record['error']}\n{record['stderr_tail']}")
    total = args.repeats * len(args.batch_sizes) * len(roles) * len(args.only)
    done = 0
    for repeat in range(args.repeats):
        order = args.only[repeat % len(args.only) :] + args.only[: repeat % len(args.only)]
        for bs in args.batch_sizes:
            for role, epochs in roles:
                for key in order:
                    done += 1
                    log(f"[{done}/{total}] repeat {repeat + 1}, batch {bs}, {role} {epochs} epochs: {key} ...")
                    record = run_implementation(IMPLEMENTATIONS[key], bs, epochs, args.timeout, data_dir)
                    record.update(role=role, repeat=repeat, loadavg=list(os.getloadavg()))
                    runs.append(record)
                    if record["ok"]:
                        log(
                            f"  steady {fmt(steady_of(record), '.3f')} s/epoch, first {record['first_epoch_s']:.2f} s,"
                            f" process {record['wall_s']:.1f} s, {record['peak_rss_mib']:,.0f} MiB,"
                            f" val acc {record['val_accuracy']:.4f}"
                        )
                    else:
                        log(f"  FAILED: {record['error']}\n{record['stderr_tail']}")
                    save(partial=True)
    if args.sweep_seeds > 0:
        log(f"the fused launcher's modes: {args.sweep_seeds} seeds x {args.sweep_epochs} epochs ...")
        keras = IMPLEMENTATIONS["keras"]
        peer_argv = [sys.executable, *keras.argv, *(["--data", str(data_dir)] if data_dir is not None else [])]
        report["sweep"] = run_sweeps(
            run_process,
            args.sweep_seeds,
            args.sweep_epochs,
            args.batch_sizes[0],
            args.repeats,
            args.timeout,
            peer_argv=peer_argv if importlib.util.find_spec("keras") else None,
        )
    if not args.no_compile_time:
        log("compile time of the epoch program: 2-layer MLP vs the 100-layer SELU net ...")
        proc = run_process([sys.executable, str(BENCH_DIR / "compile_time.py")], args.timeout)
        report["compile_time"] = last_json_line(proc["stdout"]) if proc["returncode"] == 0 else None
    if not args.no_step_progress:
        log("progress within the epoch: the epoch program with its host callback vs without ...")
        command = [sys.executable, str(BENCH_DIR / "step_progress.py"), "--batch-size", str(args.batch_sizes[0])]
        proc = run_process(command, args.timeout)
        report["step_progress"] = last_json_line(proc["stdout"]) if proc["returncode"] == 0 else None
    measure_matmul("end")
    report["loadavg_end"] = list(os.getloadavg())
    report["duration_s"] = (dt.datetime.now().astimezone() - started).total_seconds()
    save(partial=False)
    text = markdown(report)
    if report.get("sweep"):
        text += (
            "\n"
            + "\n".join(sweep_markdown(report["sweep"], args.sweep_seeds, args.sweep_epochs, args.batch_sizes[0]))
            + "\n"
        )
    if report.get("compile_time"):
        text += "\n" + "\n".join(compile_time_markdown(report["compile_time"])) + "\n"
    if report.get("step_progress"):
        text += "\n" + "\n".join(step_progress_markdown(report["step_progress"])) + "\n"
    (args.out / "latest.md").write_text(text)
    print(text)
    log(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.md'}")
    failed = sum(not r["ok"] for r in runs) + sum(not m["ok"] for m in matmul_runs)
    if failed:
        log(f"{failed} process(es) failed: see the Failures section")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
